"""Token log-probabilities as `distill serve-model` returns them, with each token's exact bytes.

A byte-level token can end inside a UTF-8 character: its decoded text alone then shows U+FFFD, so the
OpenAI shape's `bytes` field carries the token's real bytes (`distill.providers.logprobs.token_bytes_table`).
A teacher served this way hands the student exactly the tokens it wrote, which `student.tokenizer: teacher`
maps back to ids.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from distill.providers.logprobs import token_bytes_table


def token_logprob(tokenizer, logits: torch.Tensor, token: int, top_k: int):
    """The sampled `token`'s log-probability under (V,) `logits` (the model's own distribution, before
    temperature, as OpenAI reports it) and the `top_k` likeliest tokens, each with its bytes."""
    from distill.serving.engine import TokenLogprob

    table, texts = token_bytes_table(tokenizer), token_texts(tokenizer)
    logprobs = F.log_softmax(logits, dim=-1)
    top: list[tuple[str, float]] = []
    top_bytes: list[bytes] = []
    if top_k:
        values, ids = logprobs.topk(top_k)
        for value, i in zip(values.tolist(), ids.tolist()):
            top.append((texts[i], value))
            top_bytes.append(table[i])
    return TokenLogprob(texts[token], float(logprobs[token]), tuple(top), table[token], tuple(top_bytes))


def token_texts(tokenizer) -> list[str]:
    """Each token id decoded on its own (index = id), decoded once per tokenizer: 20 alternatives a token add up."""
    cached = getattr(tokenizer, "_distill_token_texts", None)
    if cached is None:
        cached = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        tokenizer._distill_token_texts = cached
    return cached


def token_bytes(item: Any, index: int | None = None) -> list[int]:
    """The bytes of a TokenLogprob (index None) or of its `index`-th alternative, as OpenAI's list of ints."""
    if index is None:
        raw = item.token_bytes if item.token_bytes is not None else item.token.encode()
    else:
        raw = item.top_bytes[index] if index < len(item.top_bytes) else item.top[index][0].encode()
    return list(raw)
