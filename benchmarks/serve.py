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


def quickstart_size_bundle(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.release.bundle import MANIFEST, MANIFEST_FORMAT, bundle_files
    from distill.train.tokenizer import train_tokenizer

    corpus = [PROMPT, *(ROOT / "specs" / "support" / "intents.txt").read_text().splitlines()] * 20
    tokenizer = train_tokenizer(corpus, 2048)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=0, pad_token_id=1)
    bundle = folder / "bench-0.1.0"
    LlamaForCausalLM(config).save_pretrained(bundle)
    tokenizer.save_pretrained(bundle)
    (bundle / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "name": "bench", "version": "0.1.0",
                                               "files": bundle_files(bundle)}))
    return bundle


def plain_app(bundle: Path, model_id: str):
    """The baseline: one `model.generate` at a time behind a lock, streamed with TextIteratorStreamer."""
    import torch
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    model = AutoModelForCausalLM.from_pretrained(bundle).eval()
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    lock = threading.Lock()
    app = FastAPI()

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

        threading.Thread(target=run, daemon=True).start()

        async def events():
            iterator = iter(streamer)
            while True:
                piece = await asyncio.to_thread(next, iterator, None)
                if piece is None:
                    break
                yield "data: " + json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": model_id,
                                             "choices": [{"index": 0, "text": piece, "finish_reason": None}]}) + "\n\n"
            yield "data: " + json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": model_id,
                                         "choices": [], "usage": {"prompt_tokens": ids.shape[1],
                                                                  "completion_tokens": count["tokens"],
                                                                  "total_tokens": 0}}) + "\n\n"
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


async def drive(url: str, model_id: str, clients: int, requests_each: int, max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
    ttfts, tokens = [], 0

    async def one_client(index: int):
        nonlocal tokens
        for turn in range(requests_each):
            start = time.perf_counter()
            first = None
            stream = await client.completions.create(model=model_id, prompt=f"{PROMPT} ({index}.{turn})",
                                                     max_tokens=max_tokens, temperature=0, stream=True,
                                                     stream_options={"include_usage": True})
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter() - start
                if chunk.usage:
                    tokens += chunk.usage.completion_tokens
            ttfts.append(first if first is not None else time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*[one_client(i) for i in range(clients)])
    wall = time.perf_counter() - start
    p90 = statistics.quantiles(ttfts, n=10, method="inclusive")[-1] if len(ttfts) > 1 else ttfts[0]
    return {"tokens_per_s": tokens / wall, "ttft_p50": statistics.median(ttfts), "ttft_p90": p90, "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-each", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads for both servers (1 on a busy shared machine)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds not minutes: checks that the benchmark runs (its figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:  # flags given still win over these
        args = parser.parse_args(namespace=argparse.Namespace(clients="1,2", max_tokens=4, requests_each=1, threads=1))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from tiny_bundle import LoopbackServer

    from distill.serving.api import create_app
    from distill.serving.server import open_bundle

    with tempfile.TemporaryDirectory() as scratch:
        bundle = args.bundle or quickstart_size_bundle(Path(scratch))
        served = open_bundle(bundle)
        rows = []
        with LoopbackServer(create_app([served])) as batched, LoopbackServer(plain_app(bundle, served.id)) as plain:
            asyncio.run(drive(plain.url, served.id, 1, 1, 8))  # warm both paths up
            for clients in [int(c) for c in args.clients.split(",")]:
                fast = asyncio.run(drive(batched.url, served.id, clients, args.requests_each, args.max_tokens))
                slow = asyncio.run(drive(plain.url, served.id, clients, args.requests_each, args.max_tokens))
                rows.append((clients, fast, slow))
                print(f"clients {clients:>3}: batched {fast['tokens_per_s']:7.1f} tok/s  TTFT p50 "
                      f"{fast['ttft_p50'] * 1000:6.0f} ms p90 {fast['ttft_p90'] * 1000:6.0f} ms | plain "
                      f"{slow['tokens_per_s']:7.1f} tok/s  TTFT p50 {slow['ttft_p50'] * 1000:6.0f} ms p90 "
                      f"{slow['ttft_p90'] * 1000:6.0f} ms | throughput x{fast['tokens_per_s'] / slow['tokens_per_s']:.2f}",
                      flush=True)
        served.engine.close()


if __name__ == "__main__":
    main()
