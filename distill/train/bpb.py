"""Held-out bits per byte and perplexity of a causal LM.

Loss per token depends on the tokenizer, so models with different tokenizers are compared by bits per
byte of the same text: the summed negative log-likelihood of the text's tokens, in bits, divided by the
text's length in UTF-8 bytes. Perplexity (per token) is reported too, for comparison with runs that
share a tokenizer.

Every text is scored as its own document: `[bos] + prompt tokens + text tokens`, and only the text
tokens count (the prompt, for instruct specs, is context the model is given, not text it must
produce). The end-of-text token is not scored, so the bits measure exactly the text's bytes. A document
longer than `context_length` is cut into windows that overlap by one token, so every text token is
scored exactly once; tokens at the start of a later window see less context than they would with a
sliding window, which makes long documents score slightly worse (never better) than the model can.

`concatenated_bits_per_byte` scores held-out text the way plain language-model baselines do: the
documents joined by newlines into one text, cut into non-overlapping windows of `context_length`
inputs, every token scored once (after a single document-start token at the very beginning). No
document starts fresh, and story boundaries are only newlines, so the model must find them itself;
it is the stricter and more comparable of the two figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from distill.train.data import start_token


@dataclass(frozen=True)
class _Window:
    ids: list[int]  # input tokens of one forward pass, at most context_length
    scored: list[bool]  # scored[t]: the token ids[t + 1] counts (it predicts a text token)


def bits_per_byte(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    context_length: int,
    batch_size: int,
    prompts: Sequence[str] | None = None,
) -> dict[str, float | int]:
    """Score `texts` (optionally each after its `prompts[i]`) and return bpb, perplexity and counts.

    Returns `{"bits_per_byte", "perplexity", "nats_per_token", "tokens", "bytes", "texts"}`; `tokens`
    and `bytes` are the scored totals. The model is put in eval mode and left there.
    """
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2, got {context_length}")
    if prompts is not None and len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts for {len(texts)} texts")
    start = start_token(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start

    windows: list[_Window] = []
    n_bytes = 0
    n_texts = 0
    for i, text in enumerate(texts):
        if not text:
            continue
        prompt_ids = tokenizer.encode(prompts[i], add_special_tokens=False) if prompts else []
        text_ids = tokenizer.encode(text, add_special_tokens=False)
        windows += _windows([start, *prompt_ids, *text_ids], 1 + len(prompt_ids), context_length)
        n_bytes += len(text.encode("utf-8"))
        n_texts += 1
    if n_bytes == 0:
        raise ValueError("no text to score: every text is empty")

    nats, n_tokens = _score_windows(model, windows, batch_size=batch_size, pad_id=pad_id)
    return _scores(nats, n_tokens, n_bytes, n_texts)


def concatenated_bits_per_byte(model, tokenizer, texts: Sequence[str], *, context_length: int,
                               batch_size: int) -> dict[str, float | int]:
    """Score `texts` joined by newlines as one text: bits over the joined text's UTF-8 bytes.

    Windows of `context_length` input tokens follow each other without overlap: window k reads tokens
    [k*T, (k+1)*T) and predicts [k*T + 1, (k+1)*T + 1). Returns the same keys as `bits_per_byte`.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    text = "\n".join(t for t in texts if t)
    if not text:
        raise ValueError("no text to score: every text is empty")
    start = start_token(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    ids = [start, *tokenizer.encode(text, add_special_tokens=False)]
    # A window of T + 1 ids is T inputs and their T targets; the next window starts at its last id.
    windows = _windows(ids, 1, context_length + 1)
    nats, n_tokens = _score_windows(model, windows, batch_size=batch_size, pad_id=pad_id)
    return _scores(nats, n_tokens, len(text.encode("utf-8")), sum(1 for t in texts if t))


def _scores(nats: float, n_tokens: int, n_bytes: int, n_texts: int) -> dict[str, float | int]:
    """What both scorings report, from the nats summed over every scored token."""
    return {
        "bits_per_byte": nats / math.log(2) / n_bytes,
        "perplexity": math.exp(nats / n_tokens),
        "nats_per_token": nats / n_tokens,
        "tokens": n_tokens,
        "bytes": n_bytes,
        "texts": n_texts,
    }


def _windows(ids: list[int], first_scored: int, context_length: int) -> list[_Window]:
    """Cut one document into windows; target position t is scored iff t >= first_scored."""
    windows = []
    start = 0
    while start < len(ids) - 1:
        chunk = ids[start : start + context_length]
        # chunk[t] predicts chunk[t + 1], which sits at document position start + t + 1.
        scored = [start + t + 1 >= first_scored for t in range(len(chunk) - 1)] + [False]
        if any(scored):
            windows.append(_Window(chunk, scored))
        start += context_length - 1  # the last token of a window is the first (context) of the next
    return windows


@torch.no_grad()
def _score_windows(model, windows: list[_Window], *, batch_size: int, pad_id: int) -> tuple[float, int]:
    """Sum of negative log-likelihoods (nats) over scored positions, and how many there were."""
    model.eval()
    device = next(model.parameters()).device
    # Similar lengths together, so batches carry little padding.
    windows = sorted(windows, key=lambda w: len(w.ids))
    total_nats = 0.0
    total_tokens = 0
    for b in range(0, len(windows), batch_size):
        batch = windows[b : b + batch_size]
        width = max(len(w.ids) for w in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        scored = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, w in enumerate(batch):
            ids[row, : len(w.ids)] = torch.tensor(w.ids)
            attention[row, : len(w.ids)] = 1
            scored[row, : len(w.ids)] = torch.tensor(w.scored)
        ids, attention, scored = ids.to(device), attention.to(device), scored.to(device)
        # The last id of a window is only a target: the inputs are all but it (causal, so the same logits).
        logits = model(input_ids=ids[:, :-1], attention_mask=attention[:, :-1]).logits.float()  # (B, T-1, V)
        logprobs = torch.log_softmax(logits, dim=-1)
        target_logprobs = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        mask = scored[:, :-1]
        total_nats -= target_logprobs[mask].sum().item()
        total_tokens += int(mask.sum().item())
    return total_nats, total_tokens
