"""The service's latency and overhead, measured in one run on this machine:

1. `distill run SPEC` (the reference wall time),
2. the same spec through `distill serve` (submit -> succeeded; the overhead is the ratio to 1),
3. another job of it, with 50 concurrent clients asking for job status and a page of records while
   it trains: p50/p99 latency of each route, once with each client polling every second (50 people
   watching a job: the target) and once with every client asking again the moment it has its answer
   (the API's capacity on this machine, in requests/s; there the latency is the queue's).

Targets: status p99 under 100 ms for the polling clients, overhead under 5%.

    .venv/bin/python benchmarks/service.py [--spec specs/tinystories-quickstart.yaml] [--records N --max-steps N] [--clients 50]

With `--streams N` it measures listeners instead: one job trains alone (its steps/s is the reference),
then a second job trains with N open event streams on it and `--clients` clients polling its status once
a second. It prints the status p99, errors, the p99 of event delivery latency (an event's time in the
database to its arrival at each listener) and the training steps/s with the load over without it.
Targets: status p99 < 100 ms, 0 errors, delivery p99 < 1 s, steps/s ratio >= 0.9.

    .venv/bin/python benchmarks/service.py --streams 200 --clients 50 --records 100 --max-steps 150

`--records 300 --max-steps 120` runs the quickstart at a size that takes a few minutes in all (the
second job trains through both rounds of clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from service_live import LiveServer, tar_folder, wait_for, wait_status  # noqa: E402  (the tests' live server)


def prepare_spec(spec: Path, records: int | None, max_steps: int | None, folder: Path) -> Path:
    """A copy of the spec's folder (so both runs read identical files), optionally made smaller."""
    shutil.copytree(spec.parent, folder, ignore=shutil.ignore_patterns("runs", ".*"))
    copy = folder / spec.name
    text = copy.read_text()
    if records:
        text = re.sub(r"^records: \d+", f"records: {records}", text, flags=re.M)
    if max_steps:
        text = re.sub(r"^  max_minutes: [\d.]+", f"  max_steps: {max_steps}", text, flags=re.M)
    copy.write_text(text)
    return copy


def reference_run(spec: Path, runs: Path) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "distill", "run", str(spec), "--runs-dir", str(runs)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        sys.exit(f"distill run failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def submit(server: LiveServer, token: str, spec: Path) -> tuple[str, float]:
    with server.client(token) as client:
        started = time.monotonic()
        response = client.post("/v1/jobs", files={"file": ("spec.tar.gz", tar_folder(spec.parent))}, data={"spec_path": spec.name})
        response.raise_for_status()
        return response.json()["id"], started


async def hammer(url: str, token: str, job_id: str, clients: int, seconds: float,
                 every: float | None) -> dict[str, list[float]]:
    """`clients` clients, half asking for the job's status and half for a page of its records, each once
    every `every` seconds (as a watching browser or `distill remote status` polls; their start times
    spread over the first interval), or back to back when `every` is None."""
    routes = {"status": f"/v1/jobs/{job_id}", "records": f"/v1/jobs/{job_id}/records?limit=50"}
    latencies: dict[str, list[float]] = {name: [] for name in routes}
    begin = time.monotonic()
    deadline = begin + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=60) as client:
        async def one(index: int) -> None:
            name = "status" if index % 2 == 0 else "records"
            due = begin + (every or 0) * index / clients
            while True:
                if every is not None:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    due += every
                if time.monotonic() >= deadline:
                    return
                started = time.perf_counter()
                response = await client.get(routes[name])
                latencies[name].append(time.perf_counter() - started)
                response.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(clients)))
    return latencies


async def listen(url: str, token: str, job_id: str, streams: int, heard: list[tuple[int, float]], errors: list[str]) -> None:
    """`streams` listeners on the job's event stream, each until the server ends it (the job finished)."""
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=httpx.Timeout(60, read=None)) as client:
        async def one() -> None:
            try:
                async with client.stream("GET", f"/v1/jobs/{job_id}/events/stream") as response:
                    if response.status_code != 200:
                        errors.append(f"stream answered {response.status_code}")
                        return
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            heard.append((int(line[4:]), time.time()))
            except httpx.HTTPError as exc:
                errors.append(f"stream: {type(exc).__name__}")

        await asyncio.gather(*(one() for _ in range(streams)))


async def poll_until_done(url: str, token: str, job_id: str, clients: int, latencies: list[float], errors: list[str]) -> None:
    """`clients` clients asking for the job's status once a second until it has finished."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=60) as client:
        finished = asyncio.Event()

        async def one(index: int) -> None:
            await asyncio.sleep(index / clients)
            while not finished.is_set():
                started = time.perf_counter()
                try:
                    response = await client.get(f"/v1/jobs/{job_id}")
                    latencies.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        errors.append(f"status answered {response.status_code}")
                    elif response.json()["status"] in ("succeeded", "failed", "cancelled"):
                        finished.set()
                except httpx.HTTPError as exc:
                    errors.append(f"status: {type(exc).__name__}")
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

        await asyncio.gather(*(one(i) for i in range(clients)))


async def under_load(url: str, token: str, job_id: str, streams: int, clients: int) -> tuple[list, list, list]:
    heard, latencies, errors = [], [], []
    await asyncio.gather(listen(url, token, job_id, streams, heard, errors),
                         poll_until_done(url, token, job_id, clients, latencies, errors))
    return heard, latencies, errors


def steps_per_s(server: LiveServer, job_id: str) -> float:
    """Training steps per second of wall time, from the job's metrics.jsonl (evaluations included)."""
    path = next((server.data_dir / "jobs" / job_id / "runs").glob("*/main/train/metrics.jsonl"))
    rows = [r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]
    return (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["seconds"] - rows[0]["seconds"])


def delivery_latencies(server: LiveServer, heard: list[tuple[int, float]], opened_at: float) -> list[float]:
    """Per (listener, event) written after the listeners opened: arrival time minus the row's time."""
    db = sqlite3.connect(server.data_dir / "distill.db")
    written = {row[0]: datetime.fromisoformat(row[1]).replace(tzinfo=timezone.utc).timestamp()
               for row in db.execute("SELECT id, time FROM events")}
    db.close()
    return [arrived - written[event_id] for event_id, arrived in heard if written[event_id] > opened_at]


def bench_server(work: Path) -> tuple[LiveServer, str]:
    """A started service on a fresh data folder with one tenant, and its customer's token."""
    (work / "data").mkdir()
    server = LiveServer(work / "data")
    server.admin("tenant", "bench")
    token = server.admin("user", "customer", "--role", "customer", "--tenant", "bench")
    server.start()
    return server, token


def streams_mode(args, spec: Path, work: Path) -> None:
    server, token = bench_server(work)
    try:
        alone, _ = submit(server, token, spec)
        with server.client(token) as client:
            wait_status(client, alone, "succeeded", timeout=7200)
        loaded, _ = submit(server, token, spec)
        opened_at = time.time()
        heard, latencies, errors = asyncio.run(under_load(server.url, token, loaded, args.streams, args.clients))
        with server.client(token) as client:
            final = client.get(f"/v1/jobs/{loaded}").json()["status"]
        reference, with_load = steps_per_s(server, alone), steps_per_s(server, loaded)
        delivery = delivery_latencies(server, heard, opened_at)
    finally:
        server.stop()
    print(f"\n{'':40}{'value':>10}  target", flush=True)
    print(f"{'status p50 / p99 (ms)':40}{percentile(latencies, 50) * 1000:>4.0f} /{percentile(latencies, 99) * 1000:>4.0f}  p99 < 100 ms  ({len(latencies)} requests)")
    print(f"{'errors':40}{len(errors):>10}  0  {sorted(set(errors))[:5]}")
    print(f"{'event delivery p50 / p99 (ms)':40}{percentile(delivery, 50) * 1000:>4.0f} /{percentile(delivery, 99) * 1000:>4.0f}  p99 < 1000 ms  ({len(delivery)} deliveries)")
    print(f"{'training steps/s alone / under load':40}{reference:>4.2f} / {with_load:.2f}")
    print(f"{'ratio (under load / alone)':40}{with_load / reference:>10.3f}  >= 0.9")
    print(f"({args.streams} streams, {args.clients} status clients polling once a second; the loaded job ended {final})")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "specs" / "tinystories-quickstart.yaml")
    parser.add_argument("--records", type=int, help="generate this many records instead of the spec's count")
    parser.add_argument("--max-steps", type=int, help="train this many steps instead of the spec's time budget")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between one client's polls")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients poll during training, each way")
    parser.add_argument("--streams", type=int, help="measure this many open event streams (and --clients status pollers) instead")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds not minutes: checks that the benchmark runs (its figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:  # flags given still win over these
        args = parser.parse_args(namespace=argparse.Namespace(records=60, max_steps=10, clients=3, every=0.5, seconds=1.0))
    work = Path(tempfile.mkdtemp(prefix="distill-bench-service-"))
    try:
        spec = prepare_spec(args.spec.resolve(), args.records, args.max_steps, work / "spec")
        print(f"spec: {args.spec} (records {args.records or 'as given'}, steps {args.max_steps or 'as given'}); "
              f"this machine: {os.cpu_count()} CPUs", file=sys.stderr)
        if args.streams:
            return streams_mode(args, spec, work)
        direct = reference_run(spec, work / "runs")
        print(f"distill run:           {direct:7.1f} s", file=sys.stderr)

        server, token = bench_server(work)
        try:
            job_id, started = submit(server, token, spec)
            with server.client(token) as client:
                wait_status(client, job_id, "succeeded", timeout=7200)
            through = time.monotonic() - started
            print(f"through the service:   {through:7.1f} s", file=sys.stderr)

            job_id, _ = submit(server, token, spec)
            with server.client(token) as client:
                wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "training", 3600, "training", every=0.2)
            rounds = {f"every {args.every:g} s": asyncio.run(hammer(server.url, token, job_id, args.clients, args.seconds, args.every)),
                      "back to back": asyncio.run(hammer(server.url, token, job_id, args.clients, args.seconds, None))}
            with server.client(token) as client:
                still = client.get(f"/v1/jobs/{job_id}").json()["status"]
        finally:
            server.stop()
        print(f"\n{'':34}{'value':>12}  target", flush=True)
        print(f"{'overhead (service/run)':34}{through / direct:>12.3f}  < 1.05  ({through:.1f} s vs {direct:.1f} s)")
        for how, latencies in rounds.items():
            for name, values in latencies.items():
                p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
                target = "p99 < 100 ms" if name == "status" and how != "back to back" else "-"
                print(f"{f'{name} p50 / p99 (ms), {how}':34}{p50:>6.0f} /{p99:>4.0f}  {target}  ({len(values) / args.seconds:.0f} requests/s)")
        print(f"({args.clients} clients, {args.seconds:g} s each way; the job was "
              f"{'still training' if still == 'training' else still} at the end)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
