"""Parity of each exported form with the safetensors model, measured by the form's own runtime.

For every form: bits per byte over the eval's held-out texts (each text scored as `[bos] + tokens`, cut to the
context), its relative delta to safetensors, greedy-decoding agreement on a few prompts (the share of
generated tokens equal to safetensors' up to the first difference, averaged), the safety probes' verdicts
on greedy completions (run through the review chain with the run's policy; a regression is a probe that
violates with the form but not with safetensors) and tokens/s of greedy decoding on this CPU.

The figures go into the manifest (the signature covers them) and the release gate refuses a form over the
limits: `release.parity` in the spec, defaults 1% bpb delta for onnx and gguf f16, 5% for int8, no probe
regressions.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import Problem
from distill.release.runtimes import open_runtime

DEFAULT_LIMITS = {"onnx": 0.01, "gguf": 0.01, "int8": 0.05}  # relative bpb delta vs safetensors
GREEDY_TOKENS = 24


@dataclass
class ParityInputs:
    texts: list[str]  # held-out texts, scored for bits per byte
    prompts: list[str]  # greedy-decoding prompts
    probes: list[Any] = field(default_factory=list)  # distill.evaluate.probes.Probe
    policy: Any = None  # distill.review.policy.Policy for the probe verdicts


def measure_parity(model_dir: Path, forms: dict[str, Path], inputs: ParityInputs) -> dict[str, dict[str, Any]]:
    """format -> figures, safetensors first (the reference), each with the runtime that measured it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    reference = _figures(open_runtime("safetensors", model_dir, None, config), tokenizer, inputs)
    table = {"safetensors": _row(reference, reference, Path(model_dir), sum(
        p.stat().st_size for p in Path(model_dir).glob("*.safetensors")))}
    table["safetensors"]["runtime"] = "transformers"
    for form, path in forms.items():
        runtime = open_runtime(form, model_dir, path, config)
        table[form] = {**_row(_figures(runtime, tokenizer, inputs), reference, path, path.stat().st_size),
                       "runtime": runtime.name}
    return table


def _row(figures: dict[str, Any], reference: dict[str, Any], path: Path, size: int) -> dict[str, Any]:
    agreement = [_prefix_share(a, b) for a, b in zip(figures["greedy"], reference["greedy"])]
    regressions = [p for p, (v, r) in enumerate(zip(figures["verdicts"], reference["verdicts"])) if v and not r]
    return {"bytes": size, "measured": True, "bits_per_byte": round(figures["bpb"], 6),
            "bpb_delta": round((figures["bpb"] - reference["bpb"]) / reference["bpb"], 6),
            "greedy_agreement": round(sum(agreement) / len(agreement), 4) if agreement else None,
            "probe_violations": sum(figures["verdicts"]),
            "probe_verdicts_same": sum(v == r for v, r in zip(figures["verdicts"], reference["verdicts"])),
            "probes": len(figures["verdicts"]), "probe_regressions": [figures["probe_ids"][p] for p in regressions],
            "tokens_per_s": round(figures["tokens_per_s"], 1)}


def _prefix_share(a: list[int], b: list[int]) -> float:
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return same / max(len(b), 1)


def _figures(runtime, tokenizer, inputs: ParityInputs) -> dict[str, Any]:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    nats = n_bytes = 0.0
    for text in inputs.texts:
        ids = [bos, *tokenizer.encode(text, add_special_tokens=False)][:runtime.context]
        logits, _ = runtime.start(ids[:-1])
        nats += _nll(logits, ids[1:])
        n_bytes += len(text.encode("utf-8"))
    started, generated, greedy = time.perf_counter(), 0, []
    for prompt in inputs.prompts:
        greedy.append(runtime.greedy([bos, *tokenizer.encode(prompt, add_special_tokens=False)], GREEDY_TOKENS))
        generated += len(greedy[-1])
    elapsed = time.perf_counter() - started
    verdicts = _verdicts(runtime, tokenizer, bos, inputs)
    return {"bpb": nats / math.log(2) / max(n_bytes, 1), "greedy": greedy, "verdicts": verdicts,
            "probe_ids": [p.id for p in inputs.probes], "tokens_per_s": generated / elapsed if elapsed else 0.0}


def _nll(logits: np.ndarray, targets: list[int]) -> float:
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1)))
    return float((log_z - logits[np.arange(len(targets)), targets]).sum())


def _verdicts(runtime, tokenizer, bos: int, inputs: ParityInputs) -> list[bool]:
    if not inputs.probes:
        return []
    from distill.evaluate.probes import score_probe_completions

    completions = []
    for probe in inputs.probes:
        ids = runtime.greedy([bos, *tokenizer.encode(probe.prompt, add_special_tokens=False)], GREEDY_TOKENS)
        if tokenizer.eos_token_id in ids:
            ids = ids[:ids.index(tokenizer.eos_token_id)]
        completions.append([tokenizer.decode(ids, skip_special_tokens=True)])
    return [row["violation"] for row in score_probe_completions(inputs.probes, completions, inputs.policy)["rows"]]


def parity_failures(table: dict[str, dict[str, Any]], limits: dict[str, float] | None = None) -> list[Problem]:
    """Every exported form over its bpb-delta limit, with a probe regression, or not measured."""
    limits = {**DEFAULT_LIMITS, **(limits or {})}
    problems = []
    for form, row in table.items():
        if form == "safetensors":
            continue
        if not row.get("measured"):
            problems.append(Problem(f"the {form} form was not run by its runtime: {row.get('why')}",
                                    key=f"release.formats.{form}", hint="install the runtime, or drop the format"))
            continue
        if abs(row["bpb_delta"]) > limits[form]:
            problems.append(Problem(f"the {form} form's bits per byte differ from safetensors by {row['bpb_delta']:+.2%}, "
                                    f"over the limit of {limits[form]:.1%}", key=f"release.parity.{form}",
                                    hint="the export changed the model; drop the format or raise the limit deliberately"))
        if row["probe_regressions"]:
            problems.append(Problem(f"the {form} form violates safety probes that safetensors passes: "
                                    f"{', '.join(row['probe_regressions'][:5])}", key=f"release.formats.{form}",
                                    hint="do not ship this form: its safety behaviour differs from the evaluated model"))
    return problems


def format_table(table: dict[str, dict[str, Any]]) -> list[str]:
    """The parity table as aligned text lines."""
    lines = [f"{'format':<12}{'bytes':>12}{'bpb':>10}{'delta':>9}{'greedy':>8}{'probes same':>13}{'tok/s':>9}  runtime"]
    for form, row in table.items():
        if not row.get("measured"):
            lines.append(f"{form:<12}{row.get('bytes', 0):>12}  not run: {row.get('why')}")
            continue
        agreement = row["greedy_agreement"]
        lines.append(f"{form:<12}{row['bytes']:>12}{row['bits_per_byte']:>10.4f}{row['bpb_delta']:>+9.3%}"
                     f"{'-' if agreement is None else f'{agreement:.0%}':>8}"
                     f"{row['probe_verdicts_same']:>6}/{row['probes']:<6}{row['tokens_per_s']:>9.1f}"
                     f"  {row.get('runtime', '-')}")
    return lines


def parity_inputs_from_run(run_path: Path, texts: int = 32, prompts: int = 8, probes: int = 16) -> ParityInputs:
    """The eval's held-out texts (the validation split), their beginnings as greedy prompts, and the first
    probes of the eval's probe sets rendered as the eval renders them, with the spec's safety policy."""
    import dataclasses

    from transformers import AutoTokenizer

    from distill.evaluate.probes import load_probes
    from distill.evaluate.stage import _prompt_renderer, eval_settings_from_spec, heldout_examples
    from distill.review.policy import spec_policy
    from distill.rundir import RunDir

    loaded = RunDir.open(run_path).load_spec()
    examples = heldout_examples(run_path)[:texts]
    render = _prompt_renderer(AutoTokenizer.from_pretrained(run_path / "train" / "model"), loaded.spec.kind)
    settings = eval_settings_from_spec(loaded.spec, loaded.directory)
    sets = list(settings.probe_sets or (("instruct",) if loaded.spec.kind == "instruct" else ("story",)))
    starts = [render(e["prompt"]) if e.get("prompt") else " ".join(e["text"].split()[:6]) for e in examples[:prompts]]
    return ParityInputs(texts=[e["text"] for e in examples], prompts=starts,
                        probes=[dataclasses.replace(p, prompt=render(p.prompt)) for p in load_probes(sets)[:probes]],
                        policy=spec_policy(loaded))
