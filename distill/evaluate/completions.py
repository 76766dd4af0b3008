"""The student writes: sampled completions of prompts (story beginnings, instruct inputs, safety probes).

Each prompt is fed as `[bos] + prompt tokens`, the way the student saw documents in training, and
continued until the end-of-text token or `max_new_tokens`. Sampling is seeded, so an eval is repeatable
on the same machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from distill.train.data import start_token


@torch.no_grad()
def complete(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    samples: int = 1,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 50,
    batch_size: int = 8,
    seed: int = 0,
    context_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """`samples` completions per prompt: result[i][j] is sample j of prompts[i] (the new text only).

    `context_length` caps prompt + completion (the positions the student was trained on); a prompt
    longer than three quarters of it keeps its end. `on_batch(n)` is called after each batch with the number of prompts done.
    """
    model.eval()
    device = next(model.parameters()).device
    start = start_token(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
    generator_seed = torch.Generator().manual_seed(seed)
    results: list[list[str]] = []
    for b in range(0, len(prompts), batch_size):
        batch = [[start, *tokenizer.encode(p, add_special_tokens=False)] for p in prompts[b : b + batch_size]]
        if context_length is not None:
            batch = [ids[-(context_length * 3 // 4):] for ids in batch]  # leave a quarter for the completion
        width = max(len(ids) for ids in batch)
        budget = max_new_tokens if context_length is None else min(max_new_tokens, context_length - width)
        # Left padding: every row's last real token sits at the same position, where generation starts.
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt_ids in enumerate(batch):
            ids[row, width - len(prompt_ids):] = torch.tensor(prompt_ids)
            attention[row, width - len(prompt_ids):] = 1
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
        output = model.generate(
            input_ids=ids.to(device),
            attention_mask=attention.to(device),
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=top_k if temperature > 0 else None,
            max_new_tokens=budget,
            num_return_sequences=samples,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, width:].tolist()  # (len(batch) * samples, new) in prompt-major order
        texts = [tokenizer.decode(_until_eos(row, tokenizer.eos_token_id), skip_special_tokens=True)
                 for row in new_tokens]
        results += [texts[i * samples : (i + 1) * samples] for i in range(len(batch))]
        if on_batch is not None:
            on_batch(len(results))
    return results


def _until_eos(ids: list[int], eos_id: int | None) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id is not None and eos_id in ids else ids
