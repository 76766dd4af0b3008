"""`distill release RUN`, `distill verify BUNDLE` and `distill keygen PATH`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli.params import stage_command


def release(
    run: Path = typer.Argument(..., help="The run directory (runs/<spec-name>/<run-id>)."),
    override_gate: str = typer.Option(None, "--override-gate", metavar="REASON",
                                      help="Release although the gate fails (local development only: needs "
                                           "DISTILL_ALLOW_GATE_OVERRIDE=1). The reason is stamped into the bundle."),
    signing_key: Annotated[Optional[Path], typer.Option(
        "--signing-key", metavar="KEY", envvar="DISTILL_SIGNING_KEY", show_envvar=True,
        help="Your Ed25519 private key (PEM, from `distill keygen`): signs the manifest. Read only; never "
             "copied into the run or the bundle.")] = None,
    openssf_key: Annotated[Optional[Path], typer.Option(
        "--openssf-key", metavar="KEY", envvar="DISTILL_OPENSSF_KEY", show_envvar=True,
        help="Your EC P-256 private key (PEM, from `distill keygen --openssf`): also signs the bundle in the "
             "OpenSSF model signing format (model.sig), which `model_signing verify key` checks.")] = None,
) -> None:
    """Gate the run, then write the bundle (weights, cards, manifest, signature) and its tar.gz under RUN/release/."""
    _release(run, override_gate, signing_key, None, openssf_key)


def export(
    run: Path = typer.Argument(..., help="The run directory (runs/<spec-name>/<run-id>)."),
    formats: Annotated[list[str], typer.Option("--format", metavar="F", help=(
        "An exported form to put in the bundle: onnx, int8 (ONNX Runtime int8) or gguf (llama.cpp f16). "
        "Repeat for several; each is checked against the safetensors weights by its own runtime."))] = ...,
    override_gate: str = typer.Option(None, "--override-gate", metavar="REASON",
                                      help="Release although the gate fails (local development only)."),
    signing_key: Annotated[Optional[Path], typer.Option(
        "--signing-key", metavar="KEY", envvar="DISTILL_SIGNING_KEY", show_envvar=True,
        help="Your Ed25519 private key (PEM): signs the manifest, which holds the parity figures.")] = None,
    openssf_key: Annotated[Optional[Path], typer.Option(
        "--openssf-key", metavar="KEY", envvar="DISTILL_OPENSSF_KEY", show_envvar=True,
        help="Your EC P-256 private key (PEM, from `distill keygen --openssf`): also signs the bundle in the "
             "OpenSSF model signing format (model.sig), which `model_signing verify key` checks.")] = None,
) -> None:
    """Release the run with exported forms (replacing the spec's release.formats): each form a file in the
    bundle, its parity with safetensors measured, gated and listed in the signed manifest."""
    from distill.release.export import check_formats

    _release(run, override_gate, signing_key, check_formats(["safetensors", *formats], "--format"), openssf_key)


def _release(run: Path, override_gate: str | None, signing_key: Path | None, formats: list[str] | None,
             openssf_key: Path | None = None) -> None:

    _, bundle = stage_command("release", run, override_reason=override_gate, signing_key=signing_key, formats=formats,
                              openssf_key=openssf_key)
    print(f"bundle written: {bundle} and {bundle.name}.tar.gz", file=sys.stderr)
    print(bundle)


def verify(
    bundle: Path = typer.Argument(..., help="A bundle directory or its .tar.gz."),
    key: Annotated[Optional[Path], typer.Option("--key", metavar="PUB",
                                                help="The publisher's public key: an Ed25519 key checks the manifest's "
                                                     "signature (manifest.sig), an EC key the OpenSSF model "
                                                     "signature (model.sig); it must verify.")] = None,
    run: Annotated[Optional[Path], typer.Option("--run", metavar="RUN",
                                                help="Also check that RUN's audit log still holds the head the signed manifest names.")] = None,
) -> None:
    """Check every file of a bundle against its manifest (tampered, missing, extra or required files), and with
    --key the manifest's signature; exit 1 when anything fails."""
    from distill.release import verify as verify_bundle
    from distill.release.verify import check_audit_anchor

    report = verify_bundle(bundle, public_key=key)
    if run is not None and report.ok:
        report.problems += check_audit_anchor(bundle, run)
    for problem in report.problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if not report.ok:
        print(f"{bundle}: {len(report.problems)} problem(s)", file=sys.stderr)
        raise typer.Exit(1)
    for line in report.format_lines:
        print(line)
    signers = [s for s in (report.signed_by, report.openssf_signed_by and f"OpenSSF {report.openssf_signed_by}") if s]
    signed = f"; signature by {' and '.join(signers)} verifies" if signers else "; unsigned"
    origin = "" if key is not None or not signers else " (pass --key PUB to check who signed it)"
    print(f"OK {report.name} {report.version}: {report.files_checked} files match the manifest{signed}{origin} ({bundle})")


def keygen(path: Path = typer.Argument(..., help="Where to write the private key (PATH.pub gets the public key)."),
           openssf: bool = typer.Option(False, "--openssf", help="An EC P-256 key pair for the OpenSSF model "
                                        "signature (release --openssf-key) instead of Ed25519.")) -> None:
    """Make an Ed25519 key pair for signing releases. Keep the private key out of runs and bundles."""
    from distill.release.openssf import generate_ec_key_pair
    from distill.signing import generate_key_pair

    public = (generate_ec_key_pair if openssf else generate_key_pair)(path)
    print(f"private key: {path} (mode 0600; keep it secret)", file=sys.stderr)
    print(public)
