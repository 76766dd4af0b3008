"""How close `distill generate` runs to a provider's rate limit, and that it never pays twice.

Against the loopback teacher server (`tests/teacher_server.py`, run as a subprocess) with 300 ms latency
and a 3,000 requests/minute limit, 3,000 single-step records:

1. an uninterrupted run: achieved request rate / the limit (target >= 0.95) and requests sent / unique
   prompts (target 1.00);
2. a run killed with SIGKILL midway and resumed: requests answered / unique prompts (target 1.00; the
   only possible extra answers are the requests in flight at the moment of the kill);
3. distributed: the same records over 4 shards as Ray tasks (`--executor ray`) on a two-node Ray
   cluster on loopback, all pacing themselves through one shared rate budget: achieved rate / the limit
   (target >= 0.95, with no 429) and requests sent / unique prompts (target 1.00). Needs distill[ray].

    .venv/bin/python benchmarks/synthesis.py [--records 3000] [--rpm 3000] [--latency 0.3] [--parts local,killed,ray]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.rundir import RunDir  # noqa: E402
from distill.spec import load_spec  # noqa: E402
from distill.synthesis import generate  # noqa: E402
from tests.teacher_server import TeacherServerProcess  # noqa: E402

KEY_ENV = "DISTILL_BENCH_TEACHER_KEY"


def write_spec(folder: Path, base_url: str, records: int, rpm: int, concurrency: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(f"""
name: synthesis-bench
kind: text
records: {records}
variables:
  animal: {{type: choice, items: [fox, bear, owl, cat, dog, hen]}}
  mood: {{type: choice, items: [happy, sad, brave, sleepy]}}
steps:
  - name: story
    user: "Write a short story about a {{{{ mood }}}} {{{{ animal }}}}. (record {{{{ record_index }}}})"
teacher:
  provider: openai
  model: gpt-4o-mini
  base_url: {base_url}
  api_key_env: {KEY_ENV}
  concurrency: {concurrency}
  rate_limit: {{rpm: {rpm}}}
  params: {{max_tokens: 200}}
""")
    return folder / "spec.yaml"


def uninterrupted(server: TeacherServerProcess, folder: Path, args: argparse.Namespace) -> None:
    spec = write_spec(folder, server.openai_base_url, args.records, args.rpm, args.concurrency)
    loaded = load_spec(spec)
    started = time.monotonic()
    result = generate(loaded, RunDir.create(loaded, root=folder / "runs"), show_progress=False)
    report("uninterrupted", result, time.monotonic() - started, server.stats(), args)


def distributed(server: TeacherServerProcess, folder: Path, args: argparse.Namespace) -> None:
    from distill.scale.ray_synthesis import generate_on_ray
    from tests.ray_cluster import LoopbackRayCluster

    spec = write_spec(folder, server.openai_base_url, args.records, args.rpm, args.concurrency)
    loaded = load_spec(spec)
    with LoopbackRayCluster(env={"PYTHONPATH": str(REPO), KEY_ENV: "benchmark"}) as cluster:
        started = time.monotonic()
        result = generate_on_ray(loaded, RunDir.create(loaded, root=folder / "runs"), address=cluster.address,
                                 shards=4, show_progress=False)
        elapsed = time.monotonic() - started
    report("4 Ray shards on 2 nodes", result, elapsed, server.stats(), args)


def report(title: str, result, elapsed: float, stats: dict, args: argparse.Namespace) -> None:
    # The limit is on sending: measure over the window from the first request to the last.
    window = stats["last_request_at"] - stats["first_request_at"]
    rate = (stats["answers"] - 1) / window * 60
    print(f"{title}: {result.tally.done:,} ok, {result.tally.failed:,} failed in {elapsed:.1f} s "
          f"(requests sent over {window:.1f} s); "
          f"{stats['rate_limited']:,} requests refused with 429")
    print(f"  achieved rate / limit: {rate:,.0f} / {args.rpm:,} rpm = {rate / args.rpm:.3f}  (target >= 0.95)")
    print(f"  requests sent / unique prompts: {stats['completion_requests']:,} / {stats['unique_prompts']:,} = "
          f"{stats['completion_requests'] / stats['unique_prompts']:.3f}  (target 1.00)")


def killed_and_resumed(server: TeacherServerProcess, folder: Path, args: argparse.Namespace) -> None:
    spec = write_spec(folder, server.openai_base_url, args.records, args.rpm, args.concurrency)
    runs = folder / "runs"
    script = (f"from pathlib import Path; from distill.spec import load_spec; from distill.rundir import RunDir; "
              f"from distill.synthesis import generate; l = load_spec({str(spec)!r}); "
              f"generate(l, RunDir.create(l, root=Path({str(runs)!r})), show_progress=False)")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    log = runs / "synthesis-bench" / "main" / "generate" / "records.jsonl"
    while child.poll() is None and (not log.exists() or len(log.read_text().splitlines()) < args.records // 2):
        time.sleep(0.1)
    child.kill()
    child.wait()
    logged = len(log.read_text().splitlines())
    loaded = load_spec(spec)
    result = generate(loaded, RunDir.create(loaded, root=runs), show_progress=False)
    stats = server.stats()
    print(f"killed after {logged:,} records, resumed: {result.tally.done:,} ok ({result.tally.from_cache:,} from the cache), "
          f"{result.tally.failed:,} failed")
    print(f"  answers paid / unique prompts: {stats['answers']:,} / {stats['unique_prompts']:,} = "
          f"{stats['answers'] / stats['unique_prompts']:.3f}  (target 1.00; extra = requests in flight at the kill)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rpm", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=64, help="per process (per shard with Ray)")
    parser.add_argument("--parts", default="local,killed,ray", help="which of local, killed, ray to run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds not minutes: checks that the benchmark runs (its figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:  # flags given still win over these
        args = parser.parse_args(namespace=argparse.Namespace(records=40, rpm=60_000, latency=0.01, concurrency=8,
                                                              parts="local,killed"))
    os.environ[KEY_ENV] = "benchmark"
    parts = {"local": uninterrupted, "killed": killed_and_resumed, "ray": distributed}
    with tempfile.TemporaryDirectory() as tmp, TeacherServerProcess(latency=args.latency, rpm=args.rpm) as server:
        for name in args.parts.split(","):
            server.reset_stats()
            parts[name](server, Path(tmp) / name, args)


if __name__ == "__main__":
    main()
