"""What every attention head looks at: mean distance, entropy, and a local / first-token / semantic label.

The TinyStories paper found that small models' heads split into distance-based heads (attending at a
fixed short offset) and semantic heads (attending to a name or an object wherever it was). Here each
head's attention over held-out text is summarised per query position and averaged:

- distance: sum_j a[i, j] * (i - j), in tokens;
- entropy: -sum_j a[i, j] log a[i, j] / log(i + 1), normalised so 0 is one key and 1 is uniform;
- local mass: attention on the query token and the LOCAL_WINDOW tokens before it;
- first-token mass: attention on position 0 (the start token), where many heads park attention
  they do not need (an "attention sink").

Only query positions >= MIN_QUERY count: earlier ones have too few keys for the labels to mean anything
(a uniform head at position 16 puts at most 5/17 of its attention inside the window).

The rule (`classify`): first-token if first-token mass >= 0.5; otherwise local if local mass >= 0.5;
otherwise diffuse if the normalised entropy >= 0.85 (attention spread almost evenly: an averaging head,
not one looking at anything in particular); otherwise semantic (long-range attention concentrated on
particular earlier tokens).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from distill.train.data import start_token

LOCAL_WINDOW = 4  # tokens before the query that still count as local
MIN_QUERY = 16  # first query position included in the statistics
THRESHOLD = 0.5
DIFFUSE_ENTROPY = 0.85
RULE = (f"first-token if at least {THRESHOLD:.0%} of the attention goes to the first token; otherwise local "
        f"if at least {THRESHOLD:.0%} goes to the query token and the {LOCAL_WINDOW} tokens before it; otherwise "
        f"diffuse if the normalised entropy is at least {DIFFUSE_ENTROPY} (spread almost evenly); otherwise "
        f"semantic. Averaged over query positions {MIN_QUERY} and later.")


@dataclass(frozen=True)
class HeadStats:
    layer: int
    head: int
    mean_distance: float  # tokens
    entropy: float  # 0 (one key) .. 1 (uniform)
    local_mass: float
    first_token_mass: float
    kind: str  # "local" | "first-token" | "diffuse" | "semantic"

    def to_json(self) -> dict:
        return asdict(self)


KINDS = ("local", "semantic", "diffuse", "first-token")


def classify(local_mass: float, first_token_mass: float, entropy: float) -> str:
    if first_token_mass >= THRESHOLD:
        return "first-token"
    if local_mass >= THRESHOLD:
        return "local"
    return "diffuse" if entropy >= DIFFUSE_ENTROPY else "semantic"


def attention_maps(model, tokenizer, texts: Sequence[str], *, context_length: int) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Per text: its token ids (start token first) and every layer's attention, (L, H, T, T), on CPU."""
    model.eval()
    device = next(model.parameters()).device
    start = start_token(tokenizer)
    for text in texts:
        ids = [start, *tokenizer.encode(text, add_special_tokens=False)][:context_length]
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=device), output_attentions=True)
        if not out.attentions or out.attentions[0] is None:
            raise ValueError("the model returned no attention maps: load it with attn_implementation='eager'")
        yield ids, torch.stack([a[0].float().cpu() for a in out.attentions])


def summarise_attention(attention: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums over counted query positions of one text's maps (L, H, T, T): each value (L, H), plus count."""
    T = attention.shape[-1]
    if T <= MIN_QUERY:
        zeros = torch.zeros(attention.shape[:2])
        return {"distance": zeros, "entropy": zeros, "local": zeros, "first": zeros, "queries": torch.tensor(0)}
    positions = torch.arange(T)
    offset = (positions[:, None] - positions[None, :])[MIN_QUERY:].float()  # (Q, T): i - j
    a = attention[:, :, MIN_QUERY:, :]  # (L, H, Q, T); zero where j > i (causal)
    plogp = torch.where(a > 0, a * a.clamp_min(1e-12).log(), torch.zeros_like(a)).sum(-1)  # (L, H, Q)
    max_entropy = torch.log(positions[MIN_QUERY:].float() + 1)  # (Q,): log of the number of keys
    local = (offset >= 0) & (offset <= LOCAL_WINDOW)
    return {
        "distance": (a * offset.clamp(min=0)).sum(-1).sum(-1),
        "entropy": (-plogp / max_entropy).sum(-1),
        "local": (a * local).sum(-1).sum(-1),
        "first": a[..., 0].sum(-1),
        "queries": torch.tensor(T - MIN_QUERY),
    }


def head_statistics(model, tokenizer, texts: Sequence[str], *, context_length: int) -> list[HeadStats]:
    """Every head's averaged statistics and label over `texts`."""
    totals: dict[str, torch.Tensor] = {}
    for _, attention in attention_maps(model, tokenizer, texts, context_length=context_length):
        for key, value in summarise_attention(attention).items():
            totals[key] = totals[key] + value if key in totals else value
    return stats_from_totals(totals)


def stats_from_totals(totals: dict[str, torch.Tensor]) -> list[HeadStats]:
    n = int(totals["queries"])
    if n == 0:
        raise ValueError(f"no text is longer than {MIN_QUERY} tokens: give longer held-out texts")
    stats = []
    L, H = totals["distance"].shape
    for layer in range(L):
        for head in range(H):
            local = float(totals["local"][layer, head]) / n
            first = float(totals["first"][layer, head]) / n
            entropy = float(totals["entropy"][layer, head]) / n
            stats.append(HeadStats(layer, head, float(totals["distance"][layer, head]) / n, entropy, local, first,
                                   classify(local, first, entropy)))
    return stats
