"""`distill release RUN`: the bundle a customer downloads, and its tar.gz.

`RUN/release/<name>-<version>/` holds the weights and tokenizer as `save_pretrained` wrote them, the model
card (README.md), the dataset card, the resolved spec, the license, the evaluation charts and
`manifest.json`: the sha256 of every other file and the lineage (spec, templates, teacher, dataset,
audit log, training config, distill version), and with `release.formats` the exported forms and their
measured parity. Same inputs give a byte-identical directory and tar.gz: nothing in it depends on the clock
(but the exported forms' tokens/s, measured on this machine), and the tar has sorted entries, fixed owners
and times, gzip mtime 0.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any

from distill.errors import Problem, RunDirError
from distill.files import file_sha256, replace_dir, write_atomic, write_json_atomic
from distill.release.export import FORM_FILES, check_formats, export_forms
from distill.release.cards import card_context, license_text, render_dataset_card, render_model_card, template_files
from distill.release.gate import ReleaseGateError, chain_failures, check_gate, gate_failures
from distill.release.openssf import OPENSSF_PUBLIC_KEY, OPENSSF_SIGNATURE, ec_public_pem, openssf_key_from, sign_bundle
from distill.release.parity import measure_parity, parity_failures, parity_inputs_from_run
from distill.signing import PUBLIC_KEY, SIGNATURE, key_fingerprint, public_pem, sign, signing_key_from
from distill.release.sources import ReleaseInputs, read_inputs, read_review
from distill.release.verify import verify
from distill.rundir import RunDir

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "distill-release/1"
STAGE = "release"


def release(run_dir: str | Path, *, override_reason: str | None = None, signing_key: Path | None = None,
            formats: list[str] | None = None, openssf_key: Path | None = None) -> Path:
    """Gate, then write the bundle directory and its tar.gz under RUN/release, signed when the operator gives a
    key (`signing_key`, else $DISTILL_SIGNING_KEY; `openssf_key`, else $DISTILL_OPENSSF_KEY, for the OpenSSF
    model signature). `formats` replaces the spec's `release.formats`. Returns the bundle directory. The caller
    holds the run's lock (`distill.stage_table`), so the run read here is as it stays until the bundle is written."""
    key = signing_key_from(signing_key)  # a bad key fails before any work
    openssf = openssf_key_from(openssf_key)
    chosen = check_formats(formats, "--format") if formats is not None else None
    run = RunDir.open(run_dir)
    review = read_review(run.path, anchor_key=key.public_key() if key is not None else None)
    inputs = read_inputs(run.path, run.manifest, review)
    if chosen is not None:
        inputs = dataclasses.replace(inputs, release=inputs.release.model_copy(update={"formats": chosen}))
    if len(check_formats(inputs.release.formats)) > 1:
        inputs = dataclasses.replace(inputs, parity_inputs=parity_inputs_from_run(run.path))
    return release_inputs(run, inputs, override_reason=override_reason, private_key=key, openssf_key=openssf)


def release_inputs(run: RunDir, inputs: ReleaseInputs, *, override_reason: str | None = None,
                   private_key: Any = None, openssf_key: Any = None) -> Path:
    """`release` once the stages' files are read: the bundle, recorded in the run's manifest once it verifies."""
    gate = release_gate(inputs, override_reason)  # before the stage starts: a refused release records nothing
    work = run.path / "release" / ".forms.tmp"
    try:
        forms = export_and_check(inputs, work, gate, override_reason)
        run.start_stage(STAGE)
        bundle = write_release(inputs, run.path / "release", gate=gate, private_key=private_key, forms=forms,
                               openssf_key=openssf_key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    problems = verify(bundle).problems + verify(archive).problems  # done only when what was written is whole
    if problems:
        run.finish_stage(STAGE, state="failed", error="; ".join(problems[:5]))
        raise RunDirError(*[Problem(p, file=bundle) for p in problems],
                          Problem("the written bundle does not verify", file=bundle, hint="run `distill release` again"))
    run.manifest["stages"][STAGE]["bundle"] = str(bundle)
    run.finish_stage(STAGE, counts={"files": sum(1 for p in bundle.rglob("*") if p.is_file()),
                                    "bytes": archive.stat().st_size, "gate_passed": gate["passed"],
                                    "gate_overridden": gate["override"] is not None,
                                    "signed": private_key is not None, "openssf_signed": openssf_key is not None})
    if private_key is None:
        print("warning: the bundle is unsigned: pass --signing-key KEY (or set DISTILL_SIGNING_KEY) so customers "
              "can check its origin with `distill verify --key`", file=sys.stderr)
    return bundle


def release_gate(inputs: ReleaseInputs, override_reason: str | None = None) -> dict[str, Any]:
    """The gate's verdict; raises ReleaseGateError when it fails and no override is allowed. A run's release
    also checks the chain sign-off -> training -> eval -> the model now, which no override can skip."""
    spec_policy = inputs.chain.spec_policy if inputs.chain is not None else None
    failures = gate_failures(inputs.review, inputs.evaluation, inputs.release.min_scores, spec_policy)
    if inputs.chain is not None:
        broken = chain_failures(inputs.review, inputs.chain)
        if broken:  # every problem at once, the gate's too
            refused = Problem("release refused: the model is not provably the evaluated model trained on the "
                              "signed-off data (this cannot be overridden)")
            raise ReleaseGateError(*broken, *failures, refused)
    gate = check_gate(failures, override_reason)
    if gate["override"]:
        print(f"warning: release gate overridden ({len(failures)} failed conditions): {gate['override']['reason']}",
              file=sys.stderr)
    return gate


def export_and_check(inputs: ReleaseInputs, work: Path, gate: dict[str, Any],
                     override_reason: str | None) -> dict[str, Any] | None:
    """Each exported form the release names, written under `work` and measured against the safetensors model
    by its own runtime: {"files": format -> path, "table": format -> figures}. A form over the limits fails the
    gate like any other condition (an override, where allowed, is recorded with it)."""
    formats = check_formats(inputs.release.formats)
    if len(formats) == 1:
        return None
    if inputs.parity_inputs is None:
        raise ReleaseGateError(Problem("exported forms need held-out texts to be checked against", key="release.formats",
                                       hint="release from a run directory (its eval's validation split)"))
    model_dir = inputs.model_files[0].parent
    shutil.rmtree(work, ignore_errors=True)
    print(f"release: exporting {', '.join(formats[1:])} and measuring parity with safetensors", file=sys.stderr)
    files = export_forms(model_dir, work, formats)
    table = measure_parity(model_dir, files, inputs.parity_inputs)
    failures = parity_failures(table, dict(inputs.release.parity))
    if failures and override_reason is None:
        raise ReleaseGateError(*failures, Problem("release refused: an exported form is not the evaluated model",
                                                  hint="drop the format, or fix the export, and release again"))
    if failures:
        gate["passed"] = False
        gate["failures"] = [*gate["failures"], *map(str, failures)]
    return {"files": files, "table": table}


def write_release(inputs: ReleaseInputs, out_dir: Path, *, gate: dict[str, Any], private_key: Any = None,
                  forms: dict[str, Any] | None = None, openssf_key: Any = None) -> Path:
    """The bundle directory and its tar.gz in `out_dir`, swapped in whole. Returns the bundle directory."""
    bundle = Path(out_dir) / inputs.bundle_name
    staging = Path(out_dir) / f".{inputs.bundle_name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    write_bundle(inputs, staging, gate=gate, private_key=private_key, forms=forms, openssf_key=openssf_key)
    replace_dir(staging, bundle)
    write_tar_gz(bundle, Path(out_dir) / f"{inputs.bundle_name}.tar.gz")
    return bundle


def write_bundle(inputs: ReleaseInputs, bundle: Path, *, gate: dict[str, Any], private_key: Any = None,
                 forms: dict[str, Any] | None = None, openssf_key: Any = None) -> None:
    """Every file of the bundle, then the manifest over them, then its signature, then the OpenSSF model
    signature over all of them."""
    bundle.mkdir(parents=True)
    formats = copy_model_files(inputs, bundle, forms)
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
    context = card_context(inputs, gate=gate, figures=figures, formats=formats)
    write_atomic(bundle / "README.md", render_model_card(context))
    write_atomic(bundle / "DATASET_CARD.md", render_dataset_card(context))
    write_atomic(bundle / "LICENSE", license_text(context))
    if private_key is not None:
        write_atomic(bundle / PUBLIC_KEY, public_pem(private_key))  # listed and hashed like every other file
    if openssf_key is not None:
        write_atomic(bundle / OPENSSF_PUBLIC_KEY, ec_public_pem(openssf_key.public_key()))
    write_json_atomic(bundle / MANIFEST, {
        "format": MANIFEST_FORMAT,
        "name": inputs.name,
        "version": inputs.release.version,
        "files": bundle_files(bundle),
        "lineage": lineage(inputs),
        "gate": gate,
        "formats": formats,  # each form's files and its parity with safetensors, measured by its own runtime
        "signed_by": key_fingerprint(private_key.public_key()) if private_key is not None else None,
    })
    if private_key is not None:
        write_atomic(bundle / SIGNATURE, sign((bundle / MANIFEST).read_bytes(), private_key))
    if openssf_key is not None:
        sign_bundle(bundle, inputs.bundle_name, openssf_key)


def copy_model_files(inputs: ReleaseInputs, bundle: Path, forms: dict[str, Any] | None) -> dict[str, Any]:
    """The trained model's files and each exported form's file into the bundle; returns the manifest's formats."""
    for source in inputs.model_files:
        shutil.copyfile(source, bundle / source.name)
    formats = {"safetensors": {"files": sorted(p.name for p in inputs.model_files if p.suffix == ".safetensors")}}
    for form, source in (forms or {}).get("files", {}).items():
        (bundle / FORM_FILES[form]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, bundle / FORM_FILES[form])
        formats[form] = {"files": [FORM_FILES[form]]}
    for form, figures in (forms or {}).get("table", {}).items():
        formats[form] = {**formats[form], "parity": figures}
    return formats


def bundle_files(bundle: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file but the manifest, by relative POSIX path."""
    files = {}
    for path in sorted(bundle.rglob("*")):
        relative = path.relative_to(bundle).as_posix()
        if path.is_file() and relative not in (MANIFEST, SIGNATURE, OPENSSF_SIGNATURE):
            files[relative] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return files


def lineage(inputs: ReleaseInputs) -> dict[str, Any]:
    chain = inputs.chain
    return {
        "spec_sha256": inputs.spec_sha256,
        "prompt_template_sha256": inputs.dataset.template_hashes,
        "card_template_sha256": {p.name: file_sha256(p) for p in template_files()},
        "teachers": inputs.dataset.teachers,
        "offline_stand_in": inputs.dataset.offline_stand_in,
        "dataset": {"fingerprint": inputs.dataset.fingerprint, "rows": inputs.dataset.rows, "ok": inputs.dataset.ok},
        # The chain the gate checked: the signed-off data, trained into these weights, which were evaluated.
        "review": {"signed_off": inputs.review.signed_off, "signer": inputs.review.signer,
                   "signed_at": inputs.review.signed_at, "audit_log_final_hash": inputs.review.audit_hash,
                   "audit_log_entries": inputs.review.audit_count, "policy": inputs.review.policy,
                   "dataset_fingerprint": inputs.review.dataset_fingerprint},
        "training": {**inputs.training, "dataset_fingerprint": chain.trained_on if chain else None,
                     "weights_sha256": chain.trained_weights if chain else None},
        "evaluation": {"metrics": inputs.evaluation.metrics, "probe_violation_rates": inputs.evaluation.probe_rates,
                       "weights_sha256": chain.evaluated_weights if chain else None},
        "stage_input_files": inputs.stage_input_files,
        "distill_version": inputs.distill_version,
    }


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
