"""`hf`: a local transformers causal LM from a directory, e.g. an open model or one distill released.

Concurrent `complete` calls are collected from an asyncio queue into batches; each batch runs
`generate` in a worker thread so the event loop keeps scheduling. Requests with different generation
parameters go into different batches (one `generate` call has one temperature, top_p and length).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem
from distill.providers.logprobs import TokenLogprobs, token_bytes_table
from distill.providers.protocol import Message, ProviderFault, TeacherReply, TeacherRequest

BATCH_WAIT_S = 0.01  # how long the first request of a batch waits for company


class HFLocalProvider:
    """Batched local generation. `seed` makes a batch's sampling repeatable (the same batch, the same text)."""

    name = "hf"

    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 8):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise ConfigError(Problem(f"{self.model_dir} is not a saved transformers model (no config.json)",
                                      key="teacher.model", hint="give a directory written by save_pretrained"))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens continue right after each prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).to(self.device).eval()
        self.batch_size = batch_size
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(BATCH_WAIT_S)
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            groups: dict[str, list[tuple[TeacherRequest, asyncio.Future]]] = {}
            for request, future in batch:
                groups.setdefault(json.dumps(request.params, sort_keys=True, default=str), []).append((request, future))
            for group in groups.values():
                try:
                    replies = await asyncio.to_thread(self.generate, [request for request, _ in group])
                except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the worker
                    for _, future in group:
                        if not future.done():
                            future.set_exception(ProviderFault(f"local generation failed: {type(exc).__name__}: {exc}",
                                                               retryable=False))
                    continue
                for (_, future), reply in zip(group, replies):
                    if not future.done():
                        future.set_result(reply)

    def prompt_text(self, messages: tuple[Message, ...]) -> str:
        """The chat template when the tokenizer has one, else the messages' contents one after another."""
        if self.tokenizer.chat_template:
            chat = [{"role": m.role, "content": m.content} for m in messages]
            return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m.content for m in messages if m.content) + ("\n\n" if messages else "")

    def generate(self, requests: list[TeacherRequest]) -> list[TeacherReply]:
        """One `generate` call for requests that share their parameters (runs in a worker thread)."""
        import torch

        params: dict[str, Any] = requests[0].params
        max_new = int(params.get("max_tokens", 256))
        temperature = float(params.get("temperature", 1.0))
        if params.get("seed") is not None:
            torch.manual_seed(int(params["seed"]))
        texts = [self.prompt_text(r.messages) for r in requests]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        options: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_p=float(params.get("top_p", 1.0)))
        else:
            options.update(do_sample=False)
        if params.get("stop"):
            options.update(stop_strings=list(params["stop"]), tokenizer=self.tokenizer)
        top_k = int(params.get("top_logprobs") or 0) if params.get("logprobs") else None
        if top_k is not None:
            options.update(output_logits=True, return_dict_in_generate=True)
        with torch.no_grad():
            output = self.model.generate(**encoded, **options)  # (B, prompt + new)
        steps = None
        if top_k is not None:
            steps, output = torch.stack(output.logits, dim=1).float().log_softmax(-1), output.sequences  # (B, new, V)
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        replies = []
        for row, prompt_mask in zip(new_tokens.tolist(), encoded["attention_mask"]):
            used = next((i for i, token in enumerate(row) if token in ends), len(row))
            text = self.tokenizer.decode(row[:used], skip_special_tokens=True)
            for stop in params.get("stop") or []:
                text = text.split(stop, 1)[0]
            logprobs = self.top_k_logprobs(row[:used], steps[len(replies), :used], top_k) if steps is not None else None
            replies.append(TeacherReply(text, "length" if used >= max_new else "stop", int(prompt_mask.sum()), used,
                                        self.model_dir.name, logprobs))
        return replies

    def top_k_logprobs(self, tokens: list[int], logprobs, k: int) -> TokenLogprobs:
        """The written tokens' log-probabilities (N, V) under the model's own distribution (before temperature,
        as OpenAI reports them), and its `k` likeliest tokens at each position."""
        table = token_bytes_table(self.tokenizer)
        values, ids = logprobs.topk(max(k, 1), dim=-1)
        chosen = logprobs.gather(-1, logprobs.new_tensor(tokens, dtype=int).view(-1, 1)).view(-1).tolist()
        top = [[(table[i], v) for i, v in zip(row_ids, row_values)][:k] for row_ids, row_values in zip(ids.tolist(), values.tolist())]
        return TokenLogprobs.from_top_k([table[t] for t in tokens], chosen, top)
