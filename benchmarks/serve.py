"""Serving throughput: `distill serve-model`'s batching engine vs one `model.generate` at a time, same bundle.

    python benchmarks/serve.py [--bundle BUNDLE_DIR_OR_TAR_GZ] [--form onnx|int8|gguf] [--clients 1,4,16]
                               [--max-tokens 64] [--smoke]

Each server runs in its own process on loopback, as a deployment would: the batched one is the real
`distill serve-model BUNDLE` command, the plain one (`--serve-plain`, this file) streams `model.generate`
token by token, one request at a time on one worker thread. Both speak the OpenAI streaming
API; the clients are the `openai` SDK, in this process. For each number of concurrent streaming clients it
prints aggregate generated tokens/s and the p50/p90 time to first token, side by side, with the batched/plain
throughput ratio and the first-token difference. Without --bundle it builds a quickstart-size student (d_model
128, 4 layers, vocabulary 2048, context 256) with random weights, released by the library's release path
(throughput does not depend on what the weights learned). --smoke: a tiny student, 1 and 4 clients, 8 tokens,
in seconds, to check the benchmark runs (figures meaningless).
Targets: at 1 client at least 0.9x the plain endpoint's tokens/s with a first token within 20 ms of it; at 16
clients at least 4x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PROMPT = "Channel: live chat\nCustomer: hi, my hub light keeps blinking amber and the app says offline. what do i do?"


def quickstart_size_bundle(folder: Path, *, smoke: bool = False) -> Path:
    """A bundle written by the library's release path (`write_release`, as `distill release` writes one), for a
    randomly initialised student of the quickstart's size (or a tiny one for --smoke)."""
    import os

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.release.bundle import release_gate, write_release
    from distill.release.sources import DatasetFacts, EvalFacts, ReleaseInputs, ReviewFacts, read_model_files
    from distill.spec import Release
    from distill.train.tokenizer import train_tokenizer

    corpus = [PROMPT, *(ROOT / "specs" / "support" / "intents.txt").read_text().splitlines()] * 20
    tokenizer = train_tokenizer(corpus, 512 if smoke else 2048)
    torch.manual_seed(0)
    width, layers = (32, 2) if smoke else (128, 4)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model_dir = folder / "model"
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # random weights would pick byte tokens that never decode to text, and a streaming
        for token in range(len(tokenizer)):  # server holds an unfinished character back: no first token to time
            if "\ufffd" in tokenizer.decode([token]):
                model.lm_head.weight[token] = 0.0  # logit 0: below the largest random logit, never the greedy pick
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    inputs = ReleaseInputs(
        name="bench", kind="text", release=Release(version="0.1.0"), model_files=read_model_files(model_dir),
        description="Random weights of the quickstart's size: serving throughput does not depend on what they learned.",
        dataset=DatasetFacts(rows=0, ok=0, teachers={}, fingerprint="", template_hashes={}, cost_usd=0.0),
        review=ReviewFacts(signed_off=False, signer=None, signed_at=None, audit_hash=None, note="no data: a benchmark"),
        evaluation=EvalFacts(metrics={}, intervals={}, teacher_scores={}, probe_rates={}, probe_thresholds={}, figures=[]),
        training={})
    os.environ["DISTILL_ALLOW_GATE_OVERRIDE"] = "1"  # nothing was reviewed or evaluated: the gate is overridden, and says so
    gate = release_gate(inputs, "serving benchmark: random weights, never trained")
    return write_release(inputs, folder / "release", gate=gate)


class TokenStreamer:
    """generate's streamer hook: hands each generated token id to `put_token`, then None at the end."""

    def __init__(self, put_token):
        self.put_token, self.prompt_seen = put_token, False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate's first call carries the prompt
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.put_token(token)

    def end(self) -> None:
        self.put_token(None)


def plain_app(model, tokenizer, model_id: str):
    """The baseline: one `model.generate` at a time on one worker thread, each new token's text streamed as soon
    as it is generated (TextIteratorStreamer would wait for whole words, and by default echoes the prompt first)."""
    import torch
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    worker = ThreadPoolExecutor(max_workers=1)  # one at a time; one thread, so one set of torch threads
    app = FastAPI()

    def chunk(**fields) -> str:
        return "data: " + json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": model_id,
                                      **fields}) + "\n\n"

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "bench"}]}

    @app.post("/v1/completions")
    async def completions(body: dict):
        ids = torch.tensor([[0, *tokenizer(body["prompt"], add_special_tokens=False).input_ids]])
        loop, tokens = asyncio.get_running_loop(), asyncio.Queue()
        streamer = TokenStreamer(lambda item: loop.call_soon_threadsafe(tokens.put_nowait, item))

        def run() -> int:
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=body["max_tokens"], streamer=streamer, pad_token_id=1)
            return out.shape[1] - ids.shape[1]

        generated = loop.run_in_executor(worker, run)

        async def events():
            sent, text = [], ""
            while (token := await tokens.get()) is not None:
                sent.append(token)
                new_text = tokenizer.decode(sent, skip_special_tokens=True)
                yield chunk(choices=[{"index": 0, "text": new_text[len(text):], "finish_reason": None}])
                text = new_text
            count = await generated
            yield chunk(choices=[], usage={"prompt_tokens": ids.shape[1], "completion_tokens": count,
                                           "total_tokens": ids.shape[1] + count})
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def serve_plain(bundle: Path, port: int) -> None:
    import uvicorn

    from distill.release.unpack import verified_bundle
    from distill.train.sample import load_student

    with verified_bundle(bundle, purpose="serve") as folder:
        model, tokenizer, _ = load_student(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
    uvicorn.run(plain_app(model, tokenizer, f"{manifest['name']}-{manifest['version']}"), host="127.0.0.1",
                port=port, log_level="warning")


@dataclass(frozen=True)
class Endpoint:
    url: str
    model_id: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far: what a token costs the machine,
    whatever else runs on it. Linux's /proc; psutil would be one more dependency for two numbers."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def servers(commands: list[list[str]], threads: int | None) -> Iterator[list[Endpoint]]:
    """An endpoint per command: a server process (each takes --port), started together and
    stopped on exit."""
    from tiny_bundle import free_port

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    ports = [free_port() for _ in commands]
    processes = [subprocess.Popen([*command, "--port", str(port)], cwd=ROOT, env=env)
                 for command, port in zip(commands, ports)]
    try:
        yield [wait_until_serving(process, port) for process, port in zip(processes, ports)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_serving(process: subprocess.Popen, port: int, timeout: float = 300) -> Endpoint:
    import httpx

    url, deadline = f"http://127.0.0.1:{port}/v1", time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            return Endpoint(url, httpx.get(f"{url}/models", timeout=5).json()["data"][0]["id"], process.pid)
        time.sleep(0.2)
    raise SystemExit(f"{' '.join(map(str, process.args))}: "
                     + (f"exited ({process.returncode})" if process.poll() is not None else f"not serving in {timeout:.0f} s"))


async def drive(url: str, model_id: str, clients: int, requests_each: int, max_tokens: int) -> dict:
    import openai

    ttfts, tokens = [], 0

    async def one_client(client, index: int):
        nonlocal tokens
        for turn in range(requests_each):
            start = time.perf_counter()
            first = None
            stream = await client.completions.create(model=model_id, prompt=f"{PROMPT} ({index}.{turn})",
                                                     max_tokens=max_tokens, temperature=0, stream=True,
                                                     stream_options={"include_usage": True})
            async with stream:
                async for chunk in stream:
                    if first is None and chunk.choices and chunk.choices[0].text:
                        first = time.perf_counter() - start
                    if chunk.usage:
                        tokens += chunk.usage.completion_tokens
            ttfts.append(first if first is not None else time.perf_counter() - start)

    # Each client its own connection, closed before the event loop is (no "Event loop is closed" at exit).
    async with contextlib.AsyncExitStack() as stack:
        sdk = [await stack.enter_async_context(openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0,
                                                                  timeout=600)) for _ in range(clients)]
        start = time.perf_counter()
        await asyncio.gather(*[one_client(client, i) for i, client in enumerate(sdk)])
        wall = time.perf_counter() - start
    p90 = statistics.quantiles(ttfts, n=10, method="inclusive")[-1] if len(ttfts) > 1 else ttfts[0]
    return {"tokens_per_s": tokens / wall, "ttft_p50": statistics.median(ttfts), "ttft_p90": p90, "tokens": tokens}


def run_clients(endpoint: Endpoint, clients: int, requests_each: int, max_tokens: int) -> dict:
    before = cpu_seconds(endpoint.pid)
    result = asyncio.run(drive(endpoint.url, endpoint.model_id, clients, requests_each, max_tokens))
    return {**result, "cpu_ms_per_token": (cpu_seconds(endpoint.pid) - before) * 1000 / max(result["tokens"], 1)}


def report(clients: int, fast: dict, slow: dict) -> str:
    def side(run: dict) -> str:
        return (f"{run['tokens_per_s']:7.1f} tok/s  TTFT p50 {run['ttft_p50'] * 1000:5.0f} ms p90 "
                f"{run['ttft_p90'] * 1000:5.0f} ms  CPU {run['cpu_ms_per_token']:5.1f} ms/tok")
    return (f"clients {clients:>3}: batched {side(fast)} | plain {side(slow)} | throughput "
            f"x{fast['tokens_per_s'] / slow['tokens_per_s']:.2f}, TTFT p50 {(fast['ttft_p50'] - slow['ttft_p50']) * 1000:+.0f} ms")


def median_run(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def measure(batched: Endpoint, plain: Endpoint, args) -> None:
    for endpoint in (batched, plain):  # warm both up
        run_clients(endpoint, 1, 1, 8)
    for clients in [int(c) for c in args.clients.split(",")]:
        fast, slow = [], []
        for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits both
            fast.append(run_clients(batched, clients, args.requests_each, args.max_tokens))
            slow.append(run_clients(plain, clients, args.requests_each, args.max_tokens))
        print(report(clients, median_run(fast), median_run(slow)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle directory or its .tar.gz (verified before use)")
    parser.add_argument("--form", default="safetensors",
                        help="the bundle's form the batched server runs (serve-model --form); the plain one runs safetensors")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-each", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="measure each setting this many times; medians shown")
    parser.add_argument("--threads", type=int, help="torch threads of each server (1 on a busy shared machine)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny student, 1 and 4 clients, 8 tokens: checks the benchmark runs, in seconds")
    parser.add_argument("--serve-plain", type=Path, metavar="BUNDLE", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plain:
        return serve_plain(args.serve_plain, args.port)
    if args.smoke:
        args.clients, args.max_tokens, args.requests_each, args.repeat = "1,4", 8, 1, 1
    with tempfile.TemporaryDirectory() as scratch:
        bundle = args.bundle or quickstart_size_bundle(Path(scratch), smoke=args.smoke)
        distill = [sys.executable, "-m", "distill", "serve-model", str(bundle), "--form", args.form]
        plain = [sys.executable, __file__, "--serve-plain", str(bundle)]
        with servers([distill, plain], args.threads) as (batched_server, plain_server):
            measure(batched_server, plain_server, args)


if __name__ == "__main__":
    main()
