"""`distill serve-model BUNDLE` and `distill captures delete|purge FILE`."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import typer

from distill.cli.params import PortOpt

captures_app = typer.Typer(help="Delete captured requests by id or date range, or purge expired ones.",
                           no_args_is_help=True)


def serve_model(
    bundle: Path = typer.Argument(..., help="A released bundle directory (RUN/release/<name>-<version>) or its "
                                            ".tar.gz, or a deployment file (distill promote) to serve its routes."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: PortOpt = 8000,
    api_key: str = typer.Option(None, "--api-key", envvar="DISTILL_SERVE_API_KEY", show_default=False,
                                help="Clients must send `Authorization: Bearer KEY` (better set through the "
                                     "DISTILL_SERVE_API_KEY environment variable than on the command line)."),
    capture: Path = typer.Option(None, help="Capture consenting requests (redacted) to this JSONL file. Off "
                                            "unless given."),
    capture_rate: float = typer.Option(1.0, min=0.0, max=1.0, help="Share of non-opted-out requests captured (0..1)."),
    retention_days: int = typer.Option(30, min=1, max=36500, help="Captured lines older than this are purged."),
    max_batch: int = typer.Option(64, min=1, max=4096, help="Most sequences decoded together."),
    form: str = typer.Option("safetensors", "--form", metavar="F",
                             help="Which form of the bundle runs: safetensors, onnx, int8 (ONNX Runtime) or gguf. "
                                  "An exported form is served only if the signed manifest records its parity "
                                  "check as passed."),
) -> None:
    """Serve a verified bundle over an OpenAI-compatible API (/v1/chat/completions, /v1/completions)."""
    from distill.errors import ConfigError, Problem
    from distill.serving.capture import CaptureLog
    from distill.serving.forms import SERVED_FORMS
    from distill.serving.server import serve

    if form not in SERVED_FORMS:
        raise ConfigError(Problem(f"unknown form {form!r}", key="--form", hint=f"one of {', '.join(SERVED_FORMS)}"))
    log = CaptureLog(capture, rate=capture_rate, retention_days=retention_days) if capture else None
    serve(bundle, host=host, port=port, api_key=api_key, capture=log, max_batch=max_batch, form=form)


@captures_app.command("delete")
def delete(
    file: Path = typer.Argument(..., help="The capture JSONL file."),
    request_id: list[str] = typer.Option(None, "--id", help="A request id to delete (repeatable)."),
    since: datetime = typer.Option(None, help="Delete lines created at or after this UTC time."),
    until: datetime = typer.Option(None, help="Delete lines created before this UTC time."),
) -> None:
    """Delete captured requests by id and/or creation date range."""
    from distill.serving.capture import DeleteRequest, delete_captures

    count = delete_captures(file, DeleteRequest(request_ids=request_id or [], since=since, until=until))
    print(f"deleted {count} captured request(s) from {file}", file=sys.stderr)
    print(count)


@captures_app.command("purge")
def purge(file: Path = typer.Argument(..., help="The capture JSONL file.")) -> None:
    """Delete every captured request past its retention date."""
    from distill.serving.capture import purge_expired

    count = purge_expired(file)
    print(f"purged {count} expired captured request(s) from {file}", file=sys.stderr)
    print(count)
