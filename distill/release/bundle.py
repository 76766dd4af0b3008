"""`distill release RUN`: the bundle a customer downloads, and its tar.gz.

`RUN/release/<name>-<version>/` holds the weights and tokenizer as `save_pretrained` wrote them, the model
card (README.md), the dataset card, the resolved spec, the license, the evaluation charts and
`manifest.json`: the sha256 of every other file and the lineage (spec, templates, teacher, dataset,
audit log, training config, distill version). Same inputs give a byte-identical directory and tar.gz:
nothing in it depends on the clock, and the tar has sorted entries, fixed owners and times, gzip mtime 0.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

from distill.release.cards import card_context, license_text, render_dataset_card, render_model_card, template_files
from distill.release.gate import check_gate, gate_failures
from distill.release.sources import ReleaseInputs, read_inputs, read_review
from distill.files import file_sha256, replace_dir, write_atomic, write_json_atomic
from distill.rundir import RunDir

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "distill-release/1"
STAGE = "release"


def release(run_dir: str | Path, *, override_reason: str | None = None) -> Path:
    """Gate, then write the bundle directory and its tar.gz under RUN/release. Returns the bundle directory."""
    run = RunDir.open(run_dir)
    return release_inputs(run, read_inputs(run.path, run.manifest, read_review(run.path)), override_reason=override_reason)


def release_inputs(run: RunDir, inputs: ReleaseInputs, *, override_reason: str | None = None) -> Path:
    """`release` once the stages' files are read: the bundle, recorded in the run's manifest."""
    gate = release_gate(inputs, override_reason)  # before the stage starts: a refused release records nothing
    run.start_stage(STAGE)
    bundle = write_release(inputs, run.path / "release", gate=gate)
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    run.finish_stage(STAGE, counts={"files": sum(1 for p in bundle.rglob("*") if p.is_file()),
                                    "bytes": archive.stat().st_size, "gate_passed": gate["passed"],
                                    "gate_overridden": gate["override"] is not None})
    run.manifest["stages"][STAGE]["bundle"] = str(bundle)
    run.save()
    return bundle


def release_gate(inputs: ReleaseInputs, override_reason: str | None = None) -> dict[str, Any]:
    """The gate's verdict; raises ReleaseGateError when it fails and no override is allowed."""
    failures = gate_failures(inputs.review, inputs.evaluation, inputs.release.min_scores)
    gate = check_gate(failures, override_reason)
    if gate["override"]:
        print(f"warning: release gate overridden ({len(failures)} failed conditions): {gate['override']['reason']}",
              file=sys.stderr)
    return gate


def write_release(inputs: ReleaseInputs, out_dir: Path, *, gate: dict[str, Any]) -> Path:
    """The bundle directory and its tar.gz in `out_dir`, swapped in whole. Returns the bundle directory."""
    bundle = Path(out_dir) / inputs.bundle_name
    staging = Path(out_dir) / f".{inputs.bundle_name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    write_bundle(inputs, staging, gate=gate)
    replace_dir(staging, bundle)
    write_tar_gz(bundle, Path(out_dir) / f"{inputs.bundle_name}.tar.gz")
    return bundle


def write_bundle(inputs: ReleaseInputs, bundle: Path, *, gate: dict[str, Any]) -> None:
    """Every file of the bundle, then the manifest over them."""
    bundle.mkdir(parents=True)
    for source in inputs.model_files:
        shutil.copyfile(source, bundle / source.name)
    figures = []
    for prefix, sources in (("eval", inputs.evaluation.figures), ("train", inputs.train_figures)):
        for source in sources:
            target = f"figures/{prefix}-{source.name}"
            (bundle / "figures").mkdir(exist_ok=True)
            shutil.copyfile(source, bundle / target)
            figures.append(target)

    import yaml

    if inputs.spec_resolved is not None:
        write_atomic(bundle / "spec.yaml", "# The resolved task spec this model was distilled from (defaults filled in).\n"
                     + yaml.safe_dump(inputs.spec_resolved, sort_keys=True, allow_unicode=True))
    context = card_context(inputs, gate=gate, figures=figures)
    write_atomic(bundle / "README.md", render_model_card(context))
    write_atomic(bundle / "DATASET_CARD.md", render_dataset_card(context))
    write_atomic(bundle / "LICENSE", license_text(context))
    exports = {"onnx": export_onnx(bundle)}
    write_json_atomic(bundle / MANIFEST, {
        "format": MANIFEST_FORMAT,
        "name": inputs.name,
        "version": inputs.release.version,
        "files": bundle_files(bundle),
        "lineage": lineage(inputs),
        "gate": gate,
        "exports": exports,
    })


def bundle_files(bundle: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file but the manifest, by relative POSIX path."""
    files = {}
    for path in sorted(bundle.rglob("*")):
        relative = path.relative_to(bundle).as_posix()
        if path.is_file() and relative != MANIFEST:
            files[relative] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return files


def lineage(inputs: ReleaseInputs) -> dict[str, Any]:
    return {
        "spec_sha256": inputs.spec_sha256,
        "prompt_template_sha256": inputs.dataset.template_hashes,
        "card_template_sha256": {p.name: file_sha256(p) for p in template_files()},
        "teachers": inputs.dataset.teachers,
        "offline_stand_in": inputs.dataset.offline_stand_in,
        "dataset": {"fingerprint": inputs.dataset.fingerprint, "rows": inputs.dataset.rows, "ok": inputs.dataset.ok},
        "review": {"signed_off": inputs.review.signed_off, "signer": inputs.review.signer,
                   "signed_at": inputs.review.signed_at, "audit_log_final_hash": inputs.review.audit_hash,
                   "policy": inputs.review.policy},
        "training": inputs.training,
        "evaluation": {"metrics": inputs.evaluation.metrics, "probe_violation_rates": inputs.evaluation.probe_rates},
        "stage_input_files": inputs.stage_input_files,
        "distill_version": inputs.distill_version,
    }


def export_onnx(bundle: Path) -> str:
    """ONNX export when the `onnx` package is installed; otherwise says why it was skipped."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        message = "skipped: the onnx package is not installed (pip install onnx to export model.onnx)"
        print(f"ONNX export {message}", file=sys.stderr)
        return message
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(bundle).eval()
    model.config.use_cache = False  # export the plain forward: input_ids -> logits
    example = torch.zeros((1, 8), dtype=torch.long)
    (bundle / "onnx").mkdir()
    torch.onnx.export(model, (example,), str(bundle / "onnx" / "model.onnx"), input_names=["input_ids"],
                      output_names=["logits"], dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                                             "logits": {0: "batch", 1: "sequence"}}, dynamo=False)
    print(f"ONNX export written to {bundle / 'onnx' / 'model.onnx'}", file=sys.stderr)
    return "onnx/model.onnx"


def write_tar_gz(bundle: Path, archive: Path) -> None:
    """A reproducible tar.gz of `bundle` under its own name: sorted, owner 0, mtime 0, gzip mtime 0."""
    partial = archive.with_name(f".{archive.name}.tmp")
    with partial.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [bundle, *sorted(bundle.rglob("*"))]:
            info = tarfile.TarInfo((Path(bundle.name) / path.relative_to(bundle)).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, path.stat().st_size
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    os.replace(partial, archive)
