"""`distill eval` (bits per byte, judge grades, offline metrics, safety probes) and `distill inspect`
(attention heads and MLP neurons, as HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli.params import MAX_COUNT, MAX_NEW_TOKENS, MAX_SEED, stage_command

RunArg = Annotated[Path, typer.Argument(help="The run directory (runs/<spec-name>/<run-id>).")]
HeldoutOpt = Annotated[Optional[Path], typer.Option("--heldout", help="Held-out data instead of the run's validation split: JSONL rows {prompt, text}, or text with <|endoftext|> between documents.")]


def eval_command(
    run: RunArg,
    against: Annotated[Optional[Path], typer.Option("--against", help="Another evaluated run to show side by side.")] = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="Judge model PROVIDER:MODEL (default: evaluation.judge, else the teacher).")] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Skip judge grading (no requests at all).")] = False,
    samples: Annotated[Optional[int], typer.Option("--samples", min=1, max=MAX_COUNT, help="Completions per beginning (default: evaluation.samples_per_prompt).")] = None,
    prompts: Annotated[Optional[int], typer.Option("--prompts", min=1, max=MAX_COUNT, help="Held-out beginnings to complete (default: evaluation.prompts).")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, max=MAX_NEW_TOKENS, help="Longest student completion, in tokens (default: evaluation.max_new_tokens).")] = None,
    probe_samples: Annotated[Optional[int], typer.Option("--probe-samples", min=1, max=MAX_COUNT, help="Completions per safety probe (default: evaluation.probe_samples).")] = None,
    probes: Annotated[Optional[str], typer.Option("--probes", help="Probe sets, comma-separated: names under safety/probes/ or .jsonl paths (default: story for text specs, instruct for instruct specs).")] = None,
    heldout: HeldoutOpt = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Sampling seed.")] = 0,
) -> None:
    """Evaluate the run's student: held-out bpb, teacher-as-judge grades with 95% intervals, offline metrics,
    safety probes. Writes RUN/eval/ (eval.json, report.md, report.html, charts); prints the report path."""
    import sys

    from distill.evaluate.compare import table_text

    _, result = stage_command("eval", run, judge=judge, no_judge=no_judge, heldout=heldout, against=against,
                              prompts=prompts, samples_per_prompt=samples, max_new_tokens=max_new_tokens,
                              probe_samples=probe_samples, seed=seed,
                              probe_sets=[p.strip() for p in probes.split(",") if p.strip()] if probes else None)
    print(_summary(result), file=sys.stderr)
    if result.against is not None:
        print(table_text((result.against.header, result.against.rows)))
    print(Path(result.run) / "eval" / "report.html")


def inspect_command(
    run: RunArg,
    texts: Annotated[int, typer.Option("--texts", min=1, max=MAX_COUNT, help="Held-out texts to analyse.")] = 64,
    neurons: Annotated[int, typer.Option("--neurons", min=1, max=MAX_COUNT, help="Neurons per layer to report (highest variance first).")] = 16,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=MAX_COUNT, help="Top-activating contexts per neuron.")] = 8,
    heldout: HeldoutOpt = None,
) -> None:
    """Look inside the student: attention heads (distance, entropy; local, semantic, diffuse or first-token) and the top contexts of
    its MLP neurons. Writes RUN/inspect/ (index.html, a page per layer, PNGs); prints the index path."""
    import sys

    from distill.evaluate.stage import inspect_run

    result = inspect_run(run, texts=texts, neurons_per_layer=neurons, top_k=top_k, heldout=heldout)
    kinds = ", ".join(f"{n} {k}" for k, n in result["kinds"].items())
    print(f"inspect: {len(result['heads'])} heads ({kinds}); {len(result['neurons'])} layer pages", file=sys.stderr)
    print(Path(run).resolve() / "inspect" / "index.html")


def _summary(result) -> str:
    """The eval's headline numbers (an EvalResult) for the terminal."""
    joined = result.bpb.get("validation, concatenated")
    lines = [f"validation bits per byte: {result.validation_bpb:.4f}"
             + (f" per document, {joined.bits_per_byte:.4f} as one text" if joined is not None else "")]
    if result.grading:
        for source, summary in result.grading.summary.items():
            scores = ", ".join(f"{d} {s.mean:.2f}" for d, s in summary.scores.items() if s.mean is not None)
            lines.append(f"{source}: {scores} ({summary.graded} graded, {summary.failed} failed)")
    else:
        lines.append(result.grading_skipped or "not graded")
    overall = result.probes.summary.overall
    lines.append(f"safety probes: {overall.violations}/{overall.completions} completions violated")
    return "\n".join(lines)
