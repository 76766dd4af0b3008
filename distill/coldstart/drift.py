"""`distill drift RUN`: how the real inputs differ from the ones the spec simulated, as HTML with charts.

Compares the real inputs of a coldstart run (`coldstart/real_inputs.jsonl`) with the simulated input
step of its parent run's dataset:
- length in words (distributions, means);
- vocabulary: Jensen-Shannon divergence of the word and word-bigram distributions (0 same, 1 disjoint),
  and the share of real words the simulated inputs never use;
- words over- and under-represented in real inputs (smoothed log ratio of their rates);
- real inputs unlike every simulated one (best word-set Jaccard similarity below 0.2): intents or
  topics the spec's variables never produced, shown as examples so the spec can be fixed;
- inputs that look like another language (few English function words);
- for variables read from real inputs (e.g. the channel): each value's share, real vs simulated.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
ENGLISH = set("the a an and or but to of in on for with my is it i you we this that have has not no be was are "
              "can will do does at from your me so if just".split())
UNLIKE = 0.2


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def js_divergence(a: Counter, b: Counter) -> float:
    from scipy.spatial.distance import jensenshannon

    keys = sorted(set(a) | set(b))
    if not keys:
        return 0.0
    p = [a.get(k, 0) for k in keys]
    q = [b.get(k, 0) for k in keys]
    return float(jensenshannon(p, q, base=2) ** 2)


def shares(counts: Counter) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.most_common()}


def drift_stats(real: list[dict[str, Any]], simulated: list[dict[str, Any]]) -> dict[str, Any]:
    real_words = [words(r["input"]) for r in real]
    sim_words = [words(s["input"]) for s in simulated]
    real_uni, sim_uni = Counter(w for ws in real_words for w in ws), Counter(w for ws in sim_words for w in ws)
    real_bi = Counter(b for ws in real_words for b in zip(ws, ws[1:]))
    sim_bi = Counter(b for ws in sim_words for b in zip(ws, ws[1:]))
    n_real, n_sim = sum(real_uni.values()) or 1, sum(sim_uni.values()) or 1

    def log_ratio(w: str) -> float:
        return math.log(((real_uni[w] + 1) / (n_real + len(real_uni))) / ((sim_uni[w] + 1) / (n_sim + len(sim_uni))))

    frequent = [w for w in set(real_uni) | set(sim_uni) if real_uni[w] + sim_uni[w] >= 3]
    ranked = sorted(frequent, key=log_ratio)
    sim_sets = [set(ws) for ws in sim_words]
    unlike = []
    for record, ws in zip(real, real_words):
        best = max((len(set(ws) & s) / (len(set(ws) | s) or 1) for s in sim_sets), default=0.0)
        if best < UNLIKE:
            unlike.append({"input": record["input"], "similarity": round(best, 3)})
    foreign = [r["input"] for r, ws in zip(real, real_words) if len(ws) >= 5 and sum(w in ENGLISH for w in ws) / len(ws) < 0.12]
    variables = {}
    for name in sorted({k for r in real for k in r.get("variables", {})}):
        real_values = shares(Counter(str(r["variables"][name]) for r in real if name in r.get("variables", {})))
        sim_values = shares(Counter(str(s["variables"].get(name)) for s in simulated if name in s["variables"]))
        variables[name] = [{"value": v, "real": real_values.get(v, 0.0), "simulated": sim_values.get(v, 0.0)}
                           for v in sorted(set(real_values) | set(sim_values))]
    return {
        "real": len(real), "simulated": len(simulated),
        "length_words": {"real": [len(ws) for ws in real_words], "simulated": [len(ws) for ws in sim_words]},
        "mean_words": {"real": _mean([len(ws) for ws in real_words]), "simulated": _mean([len(ws) for ws in sim_words])},
        "js_words": js_divergence(real_uni, sim_uni), "js_bigrams": js_divergence(real_bi, sim_bi),
        "unseen_word_share": sum(c for w, c in real_uni.items() if w not in sim_uni) / n_real,
        "over": [(w, round(log_ratio(w), 2), real_uni[w], sim_uni[w]) for w in reversed(ranked[-15:]) if log_ratio(w) > 0],
        "under": [(w, round(log_ratio(w), 2), real_uni[w], sim_uni[w]) for w in ranked[:15] if log_ratio(w) < 0],
        "unlike": unlike, "unlike_share": len(unlike) / (len(real) or 1),
        "foreign": foreign, "foreign_share": len(foreign) / (len(real) or 1),
        "variables": variables,
    }


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def read_inputs(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(real inputs of a coldstart run, simulated inputs of its parent run)."""
    import datasets

    lineage_path = run_dir / "coldstart" / "lineage.json"
    if not lineage_path.is_file():
        raise ConfigError(Problem("not a coldstart run (no coldstart/lineage.json)", file=run_dir,
                                  hint="make one with `distill coldstart RUN --inputs CAPTURES`"))
    lineage = json.loads(lineage_path.read_text())
    real = [json.loads(line) for line in (run_dir / "coldstart" / "real_inputs.jsonl").read_text().splitlines() if line]
    step = lineage["input_step"]
    simulated = []
    for row in datasets.load_from_disk(str(Path(lineage["parent_run"]) / "dataset")):
        if row["status"] != "ok":
            continue
        output = next((s["output"] for s in json.loads(row["steps"]) if s["name"] == step), None)
        if isinstance(output, str):
            simulated.append({"input": output, "variables": json.loads(row["variables"])})
    return real, simulated


def drift_report(run_dir: str | Path) -> Path:
    """Write RUN/coldstart/drift.html (and drift.json); returns the HTML path."""
    run_dir = Path(run_dir)
    stats = drift_stats(*read_inputs(run_dir))
    out = run_dir / "coldstart"
    (out / "drift.json").write_text(json.dumps({k: v for k, v in stats.items() if k != "length_words"}, indent=2,
                                               ensure_ascii=False))
    charts = {"lengths": length_chart(stats["length_words"]), "words": words_chart(stats["over"], stats["under"])}
    html = render(stats, charts)
    (out / "drift.html").write_text(html, encoding="utf-8")
    return out / "drift.html"


def render(stats: dict[str, Any], charts: dict[str, str]) -> str:
    import jinja2

    from distill.paths import data_path

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(data_path("templates") / "coldstart"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("drift.html.j2").render(s=stats, charts=charts)


def _png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def length_chart(lengths: dict[str, list[int]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3))
    top = max([*lengths["real"], *lengths["simulated"], 1])
    bins = range(0, top + 10, max(1, top // 25))
    axes.hist(lengths["simulated"], bins=bins, alpha=0.6, density=True, label="simulated")
    axes.hist(lengths["real"], bins=bins, alpha=0.6, density=True, label="real")
    axes.set_xlabel("words per input")
    axes.set_ylabel("share")
    axes.legend()
    return _png(figure)


def words_chart(over: list, under: list) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*over[:10], *under[:10]]
    figure, axes = plt.subplots(figsize=(6, max(2, 0.25 * len(rows) + 0.5)))
    axes.barh([r[0] for r in rows], [r[1] for r in rows], color=["tab:red" if r[1] > 0 else "tab:blue" for r in rows])
    axes.invert_yaxis()
    axes.set_xlabel("log(real rate / simulated rate)")
    return _png(figure)
