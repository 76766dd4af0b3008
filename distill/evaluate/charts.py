"""Every figure of the eval and inspect reports (matplotlib, Agg backend, PNG written atomically)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from distill.evaluate.result import ProbeRate, Score  # noqa: E402
from distill.files import TEMP_PREFIX, TEMP_SUFFIX  # noqa: E402

KIND_COLOURS = {"local": "#1f77b4", "semantic": "#d62728", "diffuse": "#9467bd", "first-token": "#7f7f7f"}
SOURCE_COLOURS = {"student": "#1f77b4", "teacher": "#ff7f0e", "other": "#2ca02c"}


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named like write_atomic's temporaries (`.NAME.RANDOM.tmp`, not `*.png`): a kill -9 mid-write leaves a file
    # that no figure glob picks up, and that the stage's next start removes.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def score_bars(series: dict[str, dict[str, Score]], path: Path, title: str = "Judge grades (95% CI)") -> None:
    """Grouped bars: one group per dimension, one bar per series (student, teacher, another run), with
    the interval as error bars."""
    dimensions = list(dict.fromkeys(d for scores in series.values() for d in scores))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(dimensions)), 4))
    for i, (name, scores) in enumerate(series.items()):
        xs, means, errors = [], [], [[], []]
        for j, dim in enumerate(dimensions):
            score = scores.get(dim)
            if score is None or score.mean is None:
                continue
            xs.append(j + (i - (len(series) - 1) / 2) * width)
            means.append(score.mean)
            errors[0].append(score.mean - score.low if score.low is not None else 0)
            errors[1].append(score.high - score.mean if score.high is not None else 0)
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=name,
               color=SOURCE_COLOURS.get(name.split(" ")[0], None))
    ax.set_xticks(range(len(dimensions)), [d.replace("_", " ") for d in dimensions])
    ax.set_ylim(0, 10)
    ax.set_ylabel("grade (0-10)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def bpb_curve(points: dict[str, list[tuple[float, float]]], path: Path, final: dict[str, float] | None = None) -> None:
    """Bits per byte over training steps, one line per metric name (val_bpb, train_bpb, ...)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, xy in points.items():
        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", markersize=3, label=name)
    for name, value in (final or {}).items():
        ax.axhline(value, linestyle="--", color="black", alpha=0.6, label=f"{name}: {value:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("bits per byte")
    ax.set_title("Bits per byte over training")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def head_scatter(heads: Sequence[Any], path: Path) -> None:
    """Mean attention distance (log scale) against normalised entropy, one point per head, by kind."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for kind, colour in KIND_COLOURS.items():
        mine = [h for h in heads if h.kind == kind]
        if mine:
            ax.scatter([max(h.mean_distance, 0.1) for h in mine], [h.entropy for h in mine], c=colour, label=kind, s=40)
    for h in heads:
        ax.annotate(f"L{h.layer}H{h.head}", (max(h.mean_distance, 0.1), h.entropy), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("mean attention distance (tokens, log scale)")
    ax.set_ylabel("attention entropy (0 = one token, 1 = uniform)")
    ax.set_title("Attention heads")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def head_grid(heads: Sequence[Any], path: Path) -> None:
    """Layers x heads: colour is the local share of attention, the label the head's kind."""
    layers = max(h.layer for h in heads) + 1
    per_layer = max(h.head for h in heads) + 1
    grid = [[0.0] * per_layer for _ in range(layers)]
    fig, ax = plt.subplots(figsize=(1 + 0.9 * per_layer, 1 + 0.7 * layers))
    for h in heads:
        grid[h.layer][h.head] = h.local_mass
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for h in heads:
        ax.text(h.head, h.layer, {"local": "L", "semantic": "S", "diffuse": "D", "first-token": "F"}[h.kind], ha="center",
                va="center", color="white" if h.local_mass > 0.6 else "black", fontsize=10, fontweight="bold")
    ax.set_xticks(range(per_layer), [f"H{i}" for i in range(per_layer)])
    ax.set_yticks(range(layers), [f"L{i}" for i in range(layers)])
    ax.set_title("Head kinds (L local, S semantic, D diffuse, F first-token)\ncolour: local share")
    fig.colorbar(image, ax=ax, label="attention on the last 5 tokens")
    save_figure(fig, path)


def attention_grid(attention, tokens: Sequence[str], kinds: dict[tuple[int, int], str], path: Path, title: str) -> None:
    """Every head's map for one text, (L, H, T, T), as a grid of small heat maps."""
    L, H, T, _ = attention.shape
    fig, axes = plt.subplots(L, H, figsize=(1.6 * H, 1.6 * L), squeeze=False)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            ax.imshow(attention[layer, head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            kind = kinds.get((layer, head), "")
            ax.set_title(f"L{layer}H{head} {kind}", fontsize=7, color=KIND_COLOURS.get(kind, "black"))
    fig.suptitle(f"{title} ({T} tokens; row = query, column = key)", fontsize=9)
    save_figure(fig, path)


def attention_detail(weights, tokens: Sequence[str], path: Path, title: str) -> None:
    """One head's map with the tokens written along both axes."""
    T = weights.shape[0]
    fig, ax = plt.subplots(figsize=(0.22 * T + 2, 0.22 * T + 1.5))
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1)
    labels = [t.replace("\n", "\\n") for t in tokens]
    ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(T), labels, fontsize=7)
    ax.set_xlabel("key (attended-to token)")
    ax.set_ylabel("query")
    ax.set_title(title)
    save_figure(fig, path)


def violation_bars(by_category: dict[str, ProbeRate], path: Path) -> None:
    """Safety probe violation rate per probe category."""
    names = list(by_category)
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(names) + 2), 3.5))
    ax.bar(names, [by_category[n].rate for n in names], color="#d62728")
    for i, n in enumerate(names):
        ax.text(i, by_category[n].rate, f"{by_category[n].violations}/{by_category[n].completions}",
                ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of completions violating")
    ax.set_title("Safety probes: violations per probe category")
    save_figure(fig, path)
