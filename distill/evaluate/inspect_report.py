"""`distill inspect`: the head and neuron analysis of a student as HTML pages with PNG figures.

    RUN/inspect/index.html        the rule, every head's statistics, figures, links to the layer pages
    RUN/inspect/layer_<n>.html    the layer's most variable MLP neurons with their top contexts
    RUN/inspect/*.png             head scatter, head grid, per-sample attention grids, one detailed map
    RUN/inspect/inspect.json      the same numbers for programs
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distill.evaluate import charts
from distill.evaluate.heads import KINDS, LOCAL_WINDOW, MIN_QUERY, RULE, attention_maps, stats_from_totals, summarise_attention
from distill.evaluate.neurons import NeuronReport, neuron_activations, top_neurons
from distill.files import write_atomic
from distill.reports import INSPECT_INDEX, INSPECT_LAYER, render


def inspect_model(model, tokenizer, texts: Sequence[str], out_dir: Path, *, context_length: int,
                  neurons_per_layer: int = 16, top_k: int = 8, heatmap_samples: int = 3, heatmap_tokens: int = 40,
                  title: str = "", on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Analyse `texts` and write the report into `out_dir`; returns what inspect.json holds."""
    step = on_step or (lambda message: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    step("attention heads")
    totals: dict[str, Any] = {}
    samples: list[tuple[list[int], Any]] = []
    for ids, attention in attention_maps(model, tokenizer, texts, context_length=context_length):
        for key, value in summarise_attention(attention).items():
            totals[key] = totals[key] + value if key in totals else value
        if len(samples) < heatmap_samples:
            n = min(heatmap_tokens, len(ids))
            samples.append((ids[:n], attention[:, :, :n, :n].clone()))
    heads = stats_from_totals(totals)
    step("MLP neurons")
    trackers, all_ids = neuron_activations(model, tokenizer, texts, context_length=context_length, top_k=top_k)
    layers = top_neurons(trackers, all_ids, tokenizer, per_layer=neurons_per_layer)

    step("figures and pages")
    charts.head_scatter(heads, out_dir / "heads_scatter.png")
    charts.head_grid(heads, out_dir / "heads_grid.png")
    kinds = {(h.layer, h.head): h.kind for h in heads}
    figures = []
    for i, (ids, attention) in enumerate(samples):
        tokens = [tokenizer.decode([t]) for t in ids]
        name = f"attention_sample_{i}.png"
        charts.attention_grid(attention, tokens, kinds, out_dir / name, f"Sample {i}")
        figures.append(name)
    detail = _detail_figure(samples, heads, tokenizer, out_dir)

    result = {
        "rule": RULE,
        "texts": len(texts),
        "tokens": sum(len(x) for x in all_ids),
        "heads": [h.to_json() for h in heads],
        "kinds": {k: sum(h.kind == k for h in heads) for k in KINDS},
        "neurons": [[_neuron_json(n) for n in layer] for layer in layers],
        "neurons_per_layer_total": [t.neurons for t in trackers],
    }
    write_atomic(out_dir / "inspect.json", json.dumps(result, indent=2) + "\n")
    write_atomic(out_dir / "index.html", _index_page(result, heads, figures, detail, title))
    for layer, neurons in enumerate(layers):
        write_atomic(out_dir / f"layer_{layer}.html", _layer_page(layer, neurons, trackers[layer].neurons, len(layers)))
    return result


def _detail_figure(samples, heads, tokenizer, out_dir: Path) -> list[tuple[str, str]]:
    """Labelled maps on sample 0 for the most local head and the semantic head with the lowest entropy."""
    if not samples:
        return []
    ids, attention = samples[0]
    tokens = [tokenizer.decode([t]) for t in ids]
    chosen = []
    local = max(heads, key=lambda h: h.local_mass)
    chosen.append(("most local", local))
    semantic = [h for h in heads if h.kind == "semantic"]
    if semantic:
        chosen.append(("most focused semantic", min(semantic, key=lambda h: h.entropy)))
    figures = []
    for label, h in chosen:
        name = f"attention_L{h.layer}H{h.head}.png"
        charts.attention_detail(attention[h.layer, h.head], tokens, out_dir / name,
                                f"L{h.layer}H{h.head} ({label}, {h.kind}): sample 0")
        figures.append((name, f"L{h.layer}H{h.head}: {label} head ({h.kind})"))
    return figures


def _neuron_json(report: NeuronReport) -> dict[str, Any]:
    return {"layer": report.layer, "neuron": report.neuron, "variance": report.variance, "mean": report.mean,
            "top": [asdict(c) for c in report.top]}


def _index_page(result: dict[str, Any], heads, figures: list[str], detail: list[tuple[str, str]], title: str) -> str:
    return render(INSPECT_INDEX, result=result, heads=heads, figures=figures, detail=detail, title=title,
                  local_window=LOCAL_WINDOW, min_query=MIN_QUERY)


def _layer_page(layer: int, neurons: Sequence[NeuronReport], total: int, layers: int) -> str:
    def top_tokens(n: NeuronReport) -> str:
        return ", ".join(sorted({repr(c.token.strip() or c.token) for c in n.top}))

    return render(INSPECT_LAYER, layer=layer, neurons=neurons, total=total, layers=layers, top_tokens=top_tokens)
