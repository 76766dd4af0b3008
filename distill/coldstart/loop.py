"""`distill coldstart RUN --inputs CAPTURES`: the next run, trained on real inputs as well as simulated ones.

    captures -> real inputs (deduplicated, reviewed by the spec's chain, parsed into the input step and
    variables) -> split: train / held-out real inputs -> the teacher answers every real input through
    the spec's later steps (the synthesis engine: cached, rate-limited, budgeted) -> the next run's
    dataset = real train records + v1's synthetic records at `coldstart.real_share` -> the usual
    review, train, eval and release (`distill run`), v2 from scratch or continuing from v1's weights.

The new run keeps `coldstart/heldout.jsonl` (prompt and teacher answer of each held-out real input, for
`distill compare`) and `coldstart/lineage.json` (v1's run, the captures' sha256 and counts).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem
from distill.rundir import RunDir, file_sha256, write_json_atomic
from distill.serving.capture import read_captures
from distill.spec import ColdStart, LoadedSpec

REAL_ID_BASE = 1_000_000_000  # real inputs' record ids start here, clear of any synthetic record's


@dataclass
class ColdStartResult:
    run: Path
    counts: dict[str, int]
    spent_usd: float


def real_inputs(captures: list[dict[str, Any]]) -> list[str]:
    """What each captured request asked: the last user message of a chat, or each completion prompt."""
    texts = []
    for line in captures:
        inputs = line["inputs"]
        if "messages" in inputs:
            users = [m["content"] for m in inputs["messages"] if m.get("role") == "user"]
            texts += users[-1:]
        else:
            texts += list(inputs.get("prompt", []))
    return [t for t in texts if t.strip()]


def deduplicate(texts: list[str]) -> list[str]:
    """First occurrence of each text, compared case- and whitespace-insensitively."""
    seen, kept = set(), []
    for text in texts:
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def parse_input(text: str, settings: ColdStart) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(variables, {input_step: message}) read from what the student was sent; None when it does not parse."""
    if settings.input_pattern is None:
        return dict(settings.defaults), {settings.input_step: text.strip()}
    match = re.fullmatch(settings.input_pattern, text.strip(), flags=re.DOTALL)
    if match is None:
        return None
    groups = {k: v.strip() for k, v in match.groupdict().items() if v is not None}
    message = groups.pop(settings.input_step, None)
    if not message:
        return None
    return {**settings.defaults, **groups}, {settings.input_step: message}


def next_spec(loaded: LoadedSpec, v1: RunDir, run_id: str) -> LoadedSpec:
    """v1's spec, released as `<version>+<run-id>` (so v1 and v2 can serve side by side); with
    `start: continue` the student starts from v1's trained weights."""
    spec = loaded.spec
    spec = spec.model_copy(update={"release": spec.release.model_copy(
        update={"version": f"{spec.release.version.split('+')[0]}+{run_id}"})})
    if spec.coldstart.start == "continue":
        model = v1.path / "train" / "model"
        if not model.is_dir():
            raise ConfigError(Problem("coldstart.start is 'continue' but v1 has no trained model", file=model))
        spec = spec.model_copy(update={"student": spec.student.model_copy(update={"base_model": str(model)})})
    return loaded._replace(spec=spec)


def build_next_run(v1_dir: str | Path, captures_path: str | Path, *, run_id: str = "coldstart",
                   root: str | Path | None = None, show_progress: bool = True) -> ColdStartResult:
    """Write the next run's dataset, held-out set and lineage; the caller then runs the usual stages.
    The new run is `<root>/<spec name>/<run_id>` (root: v1's runs folder by default)."""
    from distill.review.chain import Chain
    from distill.review.policy import spec_policy

    v1 = RunDir.open(v1_dir)
    loaded = v1.load_spec()
    settings = loaded.spec.coldstart
    if settings is None:
        raise ConfigError(Problem("the spec has no 'coldstart' section (which step simulates the user's input)",
                                  file=loaded.path, key="coldstart", hint="add e.g. coldstart: {input_step: customer_message}"))
    captures_path = Path(captures_path)
    captures = read_captures(captures_path)
    texts = real_inputs(captures)
    unique = deduplicate(texts)
    given, rejected, unparsed = usable_inputs(unique, Chain(spec_policy(loaded)), settings)
    if len(given) < 2:
        raise ConfigError(Problem(f"only {len(given)} usable real inputs in the captures (need 2 or more)",
                                  file=captures_path, hint="capture more traffic, or check coldstart.input_pattern"))
    order = list(range(len(given)))
    random.Random(loaded.spec.seed).shuffle(order)
    n_held = max(1, round(len(given) * settings.held_out))
    held_ids = {REAL_ID_BASE + i for i in order[:n_held]}

    loaded2 = next_spec(loaded, v1, run_id)
    run = RunDir.create(loaded2, root=Path(root) if root is not None else v1.path.parent.parent, run_id=run_id)
    given_by_id = {REAL_ID_BASE + i: parsed for i, parsed in enumerate(given)}
    from distill.coldstart.relabel import relabel

    rows, spent = relabel(loaded2, run, given_by_id, show_progress=show_progress)
    real_ok = [r for r in rows if r["status"] == "ok"]
    real_train = [r for r in real_ok if r["id"] not in held_ids]
    held = [r for r in real_ok if r["id"] in held_ids]
    synthetic = mix_synthetic(v1, len(real_train), settings.real_share, loaded.spec.seed)
    dataset_rows = real_train + synthetic
    from distill.synthesis.dataset import write_dataset

    write_dataset(dataset_rows, run.path / "dataset")
    folder = run.path / "coldstart"
    write_real_inputs(folder, given_by_id, held, settings.input_step)
    counts = {"captured": len(captures), "inputs": len(texts), "unique": len(unique), "rejected": rejected,
              "unparsed": unparsed, "relabelled": len(real_ok), "failed": len(rows) - len(real_ok),
              "real_train": len(real_train), "held_out": len(held), "synthetic": len(synthetic)}
    lineage = {"parent_run": str(v1.path), "parent_spec_sha256": v1.manifest.get("spec_sha256"),
               "captures": {"file": str(captures_path.resolve()), "sha256": file_sha256(captures_path)},
               "input_step": settings.input_step, "start": settings.start, "real_share": settings.real_share, "counts": counts}
    write_json_atomic(folder / "lineage.json", lineage)
    mark_generated(run, loaded2, counts, lineage)
    return ColdStartResult(run.path, counts, spent)


def usable_inputs(texts: list[str], chain, settings) -> tuple[list, int, int]:
    """(parsed inputs, rejected, unparsed): each captured text through the safety chain (a rejected one is
    dropped, a redacted one kept redacted), then parsed into the step's variables."""
    given, rejected, unparsed = [], 0, 0
    for text in texts:
        verdict = chain.check(text)
        if verdict.decision == "reject":
            rejected += 1
            continue
        parsed = parse_input(verdict.redacted_text or verdict.checked_text, settings)
        if parsed is None:
            unparsed += 1
        else:
            given.append(parsed)
    return given, rejected, unparsed


def write_real_inputs(folder: Path, given_by_id: dict[int, Any], held: list[dict[str, Any]], input_step: str) -> None:
    """RUN/coldstart/real_inputs.jsonl (every usable real input) and heldout.jsonl (those kept out of training)."""
    folder.mkdir(exist_ok=True)
    with (folder / "real_inputs.jsonl").open("w", encoding="utf-8") as handle:
        for record_id, (variables, outputs) in sorted(given_by_id.items()):
            handle.write(json.dumps({"id": record_id, "input": outputs[input_step], "variables": variables},
                                    ensure_ascii=False) + "\n")
    with (folder / "heldout.jsonl").open("w", encoding="utf-8") as handle:
        for row in held:
            step_input = json.loads(row["steps"])
            message = next(s["output"] for s in step_input if s["name"] == input_step)
            handle.write(json.dumps({"id": row["id"], "prompt": row["prompt"], "text": row["text"],
                                     "input": message}, ensure_ascii=False) + "\n")


def mix_synthetic(v1: RunDir, real: int, real_share: float, seed: int) -> list[dict[str, Any]]:
    """v1's finished synthetic records, as many as make real records `real_share` of the mix."""
    import datasets

    rows = [r for r in datasets.load_from_disk(str(v1.path / "dataset")) if r["status"] == "ok"]
    wanted = min(len(rows), round(real * (1 - real_share) / real_share))
    return sorted(random.Random(seed).sample(rows, wanted), key=lambda r: r["id"])


def mark_generated(run: RunDir, loaded: LoadedSpec, counts: dict[str, int], lineage: dict[str, Any]) -> None:
    """Record the dataset as generated, so `distill run` goes on with review, train, eval and release."""
    from distill import stages

    run.start_stage("generate")
    run.manifest["lineage"] = {"parent_run": lineage["parent_run"], "captures_sha256": lineage["captures"]["sha256"]}
    run.finish_stage("generate", counts=counts)
    run.record_inputs("generate", stages.generate_inputs(run.path, loaded))
