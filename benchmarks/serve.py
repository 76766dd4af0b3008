"""Serving throughput: the batching engine vs one `model.generate` at a time, on the same bundle.

    python benchmarks/serve.py [--bundle RUN/release/<name>-<version>] [--clients 1,4,16] [--max-tokens 64]

Both servers run on loopback and speak the OpenAI streaming API; the clients are the `openai` SDK. For
each number of concurrent streaming clients it prints aggregate generated tokens/s and the p50/p90 time
to first token, side by side, and the batched/plain throughput ratio. Without --bundle it builds a
quickstart-size student (preset `tiny`: d_model 128, 4 layers, vocabulary 2048, context 256) with
random weights: throughput does not depend on what the weights learned.
Target: at 16 clients at least 4x the plain endpoint's tokens/s, with p50 time to first token < 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
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
    LlamaForCausalLM(config).save_pretrained(model_dir)
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


def plain_app(model, tokenizer, model_id: str):
    """The baseline: one `model.generate` at a time behind a lock, streamed with TextIteratorStreamer."""
    import torch
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import TextIteratorStreamer

    lock = threading.Lock()
    app = FastAPI()

    def chunk(**fields) -> str:
        return "data: " + json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": model_id,
                                      **fields}) + "\n\n"

    @app.post("/v1/completions")
    async def completions(body: dict):
        ids = torch.tensor([[0, *tokenizer(body["prompt"], add_special_tokens=False).input_ids]])
        streamer = TextIteratorStreamer(tokenizer, skip_special_tokens=True)
        count = {"tokens": 0}

        def run():
            with lock, torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=body["max_tokens"], streamer=streamer, pad_token_id=1)
                count["tokens"] = out.shape[1] - ids.shape[1]

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        async def events():
            iterator = iter(streamer)
            while (piece := await asyncio.to_thread(next, iterator, None)) is not None:
                yield chunk(choices=[{"index": 0, "text": piece, "finish_reason": None}])
            await asyncio.to_thread(thread.join)  # the count is set once generate returns
            yield chunk(choices=[], usage={"prompt_tokens": ids.shape[1], "completion_tokens": count["tokens"],
                                           "total_tokens": ids.shape[1] + count["tokens"]})
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


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


def report(clients: int, fast: dict, slow: dict) -> str:
    return (f"clients {clients:>3}: batched {fast['tokens_per_s']:7.1f} tok/s  TTFT p50 {fast['ttft_p50'] * 1000:6.0f} ms "
            f"p90 {fast['ttft_p90'] * 1000:6.0f} ms | plain {slow['tokens_per_s']:7.1f} tok/s  TTFT p50 "
            f"{slow['ttft_p50'] * 1000:6.0f} ms p90 {slow['ttft_p90'] * 1000:6.0f} ms | throughput "
            f"x{fast['tokens_per_s'] / slow['tokens_per_s']:.2f}, TTFT p50 "
            f"{(fast['ttft_p50'] - slow['ttft_p50']) * 1000:+.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a bundle directory or its verified .tar.gz")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-each", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads for both servers (1 on a busy shared machine)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny student, 1 and 4 clients, 8 tokens: checks the benchmark runs, in seconds")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.max_tokens, args.requests_each = "1,4", 8, 1
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from tiny_bundle import LoopbackServer

    from distill.serving.api import create_app
    from distill.serving.server import open_bundle

    with tempfile.TemporaryDirectory() as scratch:
        bundle = args.bundle or quickstart_size_bundle(Path(scratch), smoke=args.smoke)
        served = open_bundle(bundle)
        try:
            with LoopbackServer(create_app([served])) as batched, \
                    LoopbackServer(plain_app(served.engine.model, served.tokenizer, served.id)) as plain:
                asyncio.run(drive(plain.url, served.id, 1, 1, 8))  # warm both paths up
                asyncio.run(drive(batched.url, served.id, 1, 1, 8))
                for clients in [int(c) for c in args.clients.split(",")]:
                    fast = asyncio.run(drive(batched.url, served.id, clients, args.requests_each, args.max_tokens))
                    slow = asyncio.run(drive(plain.url, served.id, clients, args.requests_each, args.max_tokens))
                    print(report(clients, fast, slow), flush=True)
        finally:
            served.engine.close()


if __name__ == "__main__":
    main()
