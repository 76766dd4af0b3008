"""Distribution vs text: does learning the teacher's token probabilities beat learning its text alone?

1. The teacher is a larger student trained by distill on the shared TinyStories sample for a fixed budget
   (the last 10% of stories held out, `val_split: tail`), kept in the cache folder between runs. Its chat
   template renders nothing but the document-start token, so a chat request asks it for a whole story.
2. It is served by `distill serve-model` (a subprocess) and writes the training stories through distill's
   own synthesis stage (the `openai` provider: the real `openai` SDK, `logprobs` with `top_logprobs`), so the
   dataset holds every story with the teacher's top-k distribution. The dataset is cached too.
3. Two students of the same (smaller, custom) shape, with the teacher's tokenizer (`student.tokenizer`), train at the same
   time (two processes, one thread each, so the machine's load hits both alike) for the same wall-clock
   minutes on the same stories: text only, and with `training.distillation`.
4. Printed: each student's held-out bits per byte (the sample's real held-out stories, concatenated, the
   way `benchmarks/tinystories_quality.py` scores), their ratio distribution / text (the acceptance: <= 0.95),
   the teacher's own held-out score and what the teacher wrote, in tokens.

    .venv/bin/python benchmarks/kd_quality.py [--teacher-minutes 6] [--student-minutes 3] [--stories 200]
        [--weight 1.0] [--temperature 1.0] [--top-k 20] [--runs 2] [--cache DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"
SEPARATOR = "<|endoftext|>"
EMPTY_CHAT = "{% if add_generation_prompt %}{% endif %}"  # a chat request is just the document-start token

import yaml  # noqa: E402

from distill.train.bpb import concatenated_bits_per_byte  # noqa: E402
from distill.lineage import load_saved_model  # noqa: E402
from distill.release.bundle import MANIFEST, MANIFEST_FORMAT, bundle_files  # noqa: E402
from distill.train import TrainConfig, train_student  # noqa: E402

STUDENT = """
import json, sys
from pathlib import Path
from distill.train import TrainConfig, train_student
examples = json.loads(Path(sys.argv[1]).read_text())
for example in examples:
    if example.get("teacher"):
        from distill.providers.logprobs import TokenLogprobs
        example["teacher"] = TokenLogprobs.from_json(example["teacher"])
train_student(examples, Path(sys.argv[3]), TrainConfig.model_validate_json(Path(sys.argv[2]).read_text()), kind="text")
"""


def main() -> None:
    args = parse_args()
    if not SAMPLE.is_file():
        sys.exit(f"the shared TinyStories sample is missing: {SAMPLE}")
    stories = [s.strip() for s in SAMPLE.read_text(encoding="utf-8").split(SEPARATOR)][:-1]
    if args.smoke:
        stories = stories[:300]
    held_out = stories[-max(1, len(stories) // 10):][: args.heldout]
    cache = Path(args.cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distill-kd-bench")
    teacher = cached_teacher(stories, cache, args)
    teacher_bpb = score(teacher["model"], held_out, args)
    print(f"teacher: {args.teacher_preset}, {args.teacher_minutes:g} min on the sample's first 90% of stories; "
          f"held-out {teacher_bpb:.4f} bits/byte ({len(held_out)} held-out stories); students: d{args.student_width} x "
          f"{args.student_layers} layers", flush=True)
    dataset = cached_stories(teacher["bundle"], cache, args)
    examples, teacher_tokens = examples_of(dataset)
    print(f"teacher wrote {len(examples):,} stories, {teacher_tokens:,} tokens (each with its top-{args.top_k}), "
          "through distill serve-model and the openai SDK", flush=True)
    ratios = []
    for run in range(args.runs):
        text_bpb, dist_bpb = train_pair(examples, teacher["model"], held_out, args, run)
        ratios.append(dist_bpb / text_bpb)
        print(f"run {run + 1}: held-out bits/byte (concatenated)  text only {text_bpb:.4f}  distribution "
              f"{dist_bpb:.4f}  ratio {dist_bpb / text_bpb:.3f}  (teacher {teacher_bpb:.4f}, "
              f"{teacher_tokens:,} teacher tokens)", flush=True)
    print(f"ratio distribution / text over {args.runs} run(s): " + ", ".join(f"{r:.3f}" for r in ratios) +
          f"  (weight {args.weight:g}, temperature {args.temperature:g}, top-k {args.top_k}, "
          f"{args.student_minutes:g} student minutes each, both at once)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher-preset", default="tiny")
    parser.add_argument("--teacher-minutes", type=float, default=6.0)
    parser.add_argument("--vocab", type=int, default=1024, help="the teacher's tokenizer, which the students take")
    parser.add_argument("--student-width", type=int, default=64, help="the students' custom preset: hidden size")
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--student-minutes", type=float, default=3.0)
    parser.add_argument("--stories", type=int, default=200, help="stories the teacher writes")
    parser.add_argument("--heldout", type=int, default=300, help="held-out stories scored (the first of the tail)")
    parser.add_argument("--max-tokens", type=int, default=400, help="longest story the teacher writes, in tokens")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--weight", type=float, default=5.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cache", help="where the teacher and its stories are kept between runs")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds, not minutes")
    args = parser.parse_args()
    if args.smoke:
        args.teacher_preset, args.student_width, args.student_layers, args.vocab, args.heldout = "tiny", 32, 1, 300, 20
        args.teacher_minutes, args.student_minutes, args.stories, args.max_tokens = 0.05, 0.05, 40, 48
        args.cache = args.cache or tempfile.mkdtemp(prefix="kd-smoke-")
    return args


def cached_teacher(stories: list[str], cache: Path, args) -> dict[str, Path]:
    """Train the teacher once per (preset, minutes, sample) and keep it as a servable bundle."""
    key = hashlib.sha256(f"{args.teacher_preset}-{args.teacher_minutes}-{args.vocab}-{len(stories)}".encode()).hexdigest()[:12]
    folder = cache / f"teacher-{key}"
    bundle = folder / "bundle" / "kd-teacher-0.1.0"
    if not (bundle / MANIFEST).is_file():
        config = TrainConfig(preset=args.teacher_preset, context_length=512, max_minutes=args.teacher_minutes,
                             tokenizer_vocab=args.vocab,
                             val_split="tail", val_fraction=0.1, chat_template=EMPTY_CHAT, eval_every=10**6,
                             checkpoint_every=10**6, batch_size=4, warmup_steps=20)  # short runs: many small steps
        result = train_student([{"id": i, "prompt": "", "text": s} for i, s in enumerate(stories)], folder / "train",
                               config, kind="text")
        staging = bundle.with_name(bundle.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(result.model_dir, staging)
        (staging / "README.md").write_text("# kd-teacher 0.1.0\n\nThe kd_quality benchmark's teacher.\n")
        (staging / "DATASET_CARD.md").write_text("# kd-teacher dataset\n\nThe shared TinyStories sample.\n")
        (staging / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "name": "kd-teacher", "version": "0.1.0",
                                                    "files": bundle_files(staging), "lineage": {}, "gate": {"passed": True}}))
        staging.rename(bundle)
    return {"bundle": bundle, "model": bundle}


def cached_stories(bundle: Path, cache: Path, args) -> Path:
    """The teacher's stories with their top-k log-probabilities: `distill generate` against `distill serve-model`."""
    folder = cache / f"{bundle.parent.parent.name}-stories-{args.stories}-{args.max_tokens}-top{args.top_k}"
    dataset = folder / "runs" / "kd-stories" / "main" / "dataset"
    if dataset.is_dir():
        return dataset
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "distill", "serve-model", str(bundle), "--port", str(port)],
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_until_served(url, server)
        spec = {"name": "kd-stories", "kind": "text", "records": args.stories,
                "steps": [{"name": "story", "user": "story {{ record_index }}"}],
                "teacher": {"provider": "openai", "model": "kd-teacher-0.1.0", "base_url": url,
                            "api_key_env": "KD_BENCH_KEY", "concurrency": 32, "timeout_s": 600,
                            "params": {"max_tokens": args.max_tokens, "temperature": 1.0,
                                       # a smoke teacher has barely trained and never ends a story: cut it short
                                       **({"stop": [".", " t"]} if args.smoke else {})}},
                "training": {"distillation": {"top_k": args.top_k}}}
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
        subprocess.run([sys.executable, "-m", "distill", "generate", str(folder / "spec.yaml"), "--runs-dir",
                        str(folder / "runs"), "--run-id", "main"], check=True, cwd=folder,
                       env={**os.environ, "PYTHONPATH": str(REPO), "KD_BENCH_KEY": "none"})
    finally:
        server.terminate()
        server.wait(timeout=30)
    return dataset


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_served(url: str, server: subprocess.Popen) -> None:
    """Until `distill serve-model` answers GET /v1/models through the openai SDK."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=5)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            client.models.list()
            return
        except openai.APIConnectionError:
            time.sleep(0.5)
    raise SystemExit("distill serve-model did not start")


def examples_of(dataset: Path) -> tuple[list[dict], int]:
    import datasets

    rows = [r for r in datasets.load_from_disk(str(dataset)) if r["status"] == "ok"]
    examples = [{"id": r["id"], "prompt": "", "text": r["text"], "teacher": r["teacher_logprobs"] or None,
                 "teacher_digest": hashlib.sha256(r["teacher_logprobs"].encode()).hexdigest()} for r in rows]
    return examples, sum(r["output_tokens"] for r in rows)


def train_pair(examples: list[dict], teacher: Path, held_out: list[str], args, run: int) -> tuple[float, float]:
    """Both students at once, one thread each, for the same minutes; their held-out scores (text, distribution)."""
    work = Path(tempfile.mkdtemp(prefix=f"kd-run{run}-"))
    (work / "examples.json").write_text(json.dumps(examples))
    width = args.student_width
    custom = {"hidden_size": width, "num_hidden_layers": args.student_layers, "num_attention_heads": max(1, width // 32),
              "num_key_value_heads": max(1, width // 32), "intermediate_size": width * 11 // 4}
    base = dict(preset="custom", custom=custom, tokenizer=str(teacher), context_length=16 if args.smoke else 256,
                max_minutes=args.student_minutes, num_threads=1, eval_every=10**6, checkpoint_every=10**6,
                batch_size=2 if args.smoke else 8, warmup_steps=10, val_fraction=0.05)
    configs = {"text": TrainConfig(**base),
               "distribution": TrainConfig(**base, distillation={"weight": args.weight, "temperature": args.temperature,
                                                                 "top_k": args.top_k})}
    children = {}
    for name, config in configs.items():
        (work / f"{name}.json").write_text(config.model_dump_json())
        children[name] = subprocess.Popen([sys.executable, "-c", STUDENT, str(work / "examples.json"),
                                           str(work / f"{name}.json"), str(work / name)],
                                          env={**os.environ, "PYTHONPATH": str(REPO)},
                                          stderr=(work / f"{name}.log").open("w"))
    for name, child in children.items():
        if child.wait() != 0:
            raise SystemExit(f"the {name} student failed:\n" + (work / f"{name}.log").read_text()[-2000:])
    method = json.loads((work / "distribution" / "distillation.json").read_text())
    assert method["method"] == "distribution", method
    return score(work / "text" / "model", held_out, args), score(work / "distribution" / "model", held_out, args)


def score(model_dir: Path, texts: list[str], args) -> float:
    import torch

    torch.set_num_threads(2)
    model, tokenizer = load_saved_model(model_dir)
    with torch.no_grad():
        return concatenated_bits_per_byte(model, tokenizer, texts, context_length=256, batch_size=8)["bits_per_byte"]


if __name__ == "__main__":
    main()
