"""`distill inspect`: the head and neuron analysis of a student as HTML pages with PNG figures.

    RUN/inspect/index.html        the rule, every head's statistics, figures, links to the layer pages
    RUN/inspect/layer_<n>.html    the layer's most variable MLP neurons with their top contexts
    RUN/inspect/*.png             head scatter, head grid, per-sample attention grids, one detailed map
    RUN/inspect/inspect.json      the same numbers for programs
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distill.evaluate import charts
from distill.evaluate.heads import KINDS, LOCAL_WINDOW, MIN_QUERY, RULE, attention_maps, stats_from_totals, summarise_attention
from distill.evaluate.neurons import NeuronReport, neuron_activations, top_neurons
from distill.files import write_atomic

STYLE = """<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
mark{background:#ffd54f;padding:0 2px}.ctx{font-family:ui-monospace,monospace;font-size:.85em;white-space:pre-wrap}
.local{color:#1f77b4}.semantic{color:#d62728}.diffuse{color:#9467bd}.first-token{color:#7f7f7f}</style>"""


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
    rows = "".join(
        f"<tr><td>L{h.layer}H{h.head}</td><td class='{h.kind}'>{h.kind}</td><td class=num>{h.mean_distance:.2f}</td>"
        f"<td class=num>{h.entropy:.2f}</td><td class=num>{h.local_mass:.2f}</td><td class=num>{h.first_token_mass:.2f}</td></tr>"
        for h in heads)
    layers = len(result["neurons"])
    links = " · ".join(f"<a href='layer_{i}.html'>layer {i}</a>" for i in range(layers))
    kinds = ", ".join(f"{n} {k}" for k, n in result["kinds"].items())
    samples = "".join(f"<h3>Sample {i}</h3><img src='{html.escape(f)}'>" for i, f in enumerate(figures))
    details = "".join(f"<h3>{html.escape(caption)}</h3><img src='{html.escape(f)}'>" for f, caption in detail)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Inspect {html.escape(title)}</title>{STYLE}</head><body>
<h1>Inside the student {html.escape(title)}</h1>
<p>{result['texts']} held-out texts, {result['tokens']} tokens. Heads: {kinds}. Neuron pages: {links}</p>
<h2>Attention heads</h2>
<p><b>Rule.</b> {html.escape(result['rule'])}</p>
<p>Mean distance is the attention-weighted distance (in tokens) from the query back to the keys; entropy is
normalised by the log of the number of visible keys (0: all attention on one token, 1: uniform). Local share is
the attention on the query token and the {LOCAL_WINDOW} before it; first-token share is the attention on the
start token, where heads park attention they do not need. Statistics use query positions {MIN_QUERY} and later.</p>
<img src="heads_grid.png"><img src="heads_scatter.png">
<table><tr><th>head</th><th>kind</th><th>mean distance</th><th>entropy</th><th>local share</th><th>first-token share</th></tr>{rows}</table>
<h2>Attention maps</h2>
<p>Each small map is one head on the start of a held-out text: row = the token attending, column = the token
attended to; bright = more attention. Local heads show a bright band along the diagonal, first-token heads a
bright first column, diffuse heads an even haze under the diagonal, semantic heads bright spots on particular
earlier tokens.</p>
{details}{samples}
</body></html>"""


def _layer_page(layer: int, neurons: Sequence[NeuronReport], total: int, layers: int) -> str:
    nav = " · ".join(f"<a href='layer_{i}.html'>layer {i}</a>" if i != layer else f"<b>layer {i}</b>" for i in range(layers))
    blocks = []
    for n in neurons:
        contexts = "".join(
            f"<tr><td class=num>{c.activation:.2f}</td><td class=ctx>{html.escape(c.before)}<mark>{html.escape(c.token)}</mark>"
            f"{html.escape(c.after)}</td><td class=num>{c.text}:{c.position}</td></tr>" for c in n.top)
        tokens = ", ".join(sorted({repr(c.token.strip() or c.token) for c in n.top}))
        blocks.append(f"<h3>Neuron {n.neuron}</h3><p>variance {n.variance:.3f}, mean {n.mean:.3f}; top tokens: "
                      f"{html.escape(tokens)}</p><table><tr><th>activation</th><th>context (top token marked)</th>"
                      f"<th>text:position</th></tr>{contexts}</table>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Layer {layer} neurons</title>{STYLE}</head><body>
<p><a href="index.html">back to the heads</a> · {nav}</p>
<h1>Layer {layer}: MLP neurons</h1>
<p>The {len(neurons)} neurons (of {total}) whose activation varies most over the held-out texts, each with the
tokens that activate it most and the text around them. The activation is the input of the MLP's down projection
(act(gate) x up for Llama).</p>
{''.join(blocks)}
</body></html>"""
