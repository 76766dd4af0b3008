"""`distill remote`: submit, watch and download jobs on a distill server (DISTILL_SERVER, DISTILL_TOKEN)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(name="remote", help="Talk to a distill server: submit a spec, watch the job, download the weights.",
                  no_args_is_help=True, add_completion=False)
ServerOpt = Annotated[Optional[str], typer.Option("--server", help="Server URL (default: $DISTILL_SERVER).")]


def _client(server: str | None):
    from distill.service.remote import connect

    return connect(server)


@app.command()
def submit(spec: Annotated[Path, typer.Argument(help="The spec YAML; its folder (templates, word lists) is uploaded with it.")],
           server: ServerOpt = None) -> None:
    """Upload a spec; prints the job id (stdout). Problems come back located, as `distill validate` shows them."""
    from distill.service.remote import submit as submit_spec

    with _client(server) as client:
        job = submit_spec(client, spec)
    print(f"submitted {job['spec_name']}: job {job['id']} is {job['status']} (plan estimate ${job['estimate_usd'] or 0:,.2f})",
          file=sys.stderr)
    print(job["id"])


@app.command()
def status(job: Annotated[Optional[str], typer.Argument(help="Job id (default: list your jobs).")] = None,
           server: ServerOpt = None) -> None:
    """A job's status, cost and per-stage progress as JSON (or all your jobs)."""
    from distill.service.remote import status as job_status

    with _client(server) as client:
        print(json.dumps(job_status(client, job), indent=2))


@app.command()
def retry(job: Annotated[str, typer.Argument(help="Job id.")], server: ServerOpt = None) -> None:
    """Retry a failed job from the stage that failed, keeping earlier stages' work and the review's sign-off."""
    from distill.service.remote import retry as retry_job

    with _client(server) as client:
        out = retry_job(client, job)
    print(f"job {out['id']} is {out['status']}: it resumes at the stage that failed", file=sys.stderr)


@app.command()
def events(job: Annotated[str, typer.Argument(help="Job id.")],
           follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the job finishes.")] = False,
           server: ServerOpt = None) -> None:
    """The job's events, one per line (time, type, message)."""
    from distill.service.remote import events as job_events

    with _client(server) as client:
        for event in job_events(client, job, follow):
            print(f"{event['time']}  {event['type']:<7} {event['message']}", flush=True)


@app.command()
def download(job: Annotated[str, typer.Argument(help="Job id.")],
             output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the tar.gz.")] = None,
             server: ServerOpt = None) -> None:
    """Download the released bundle (resumes a partial download; checks its sha256); prints its path."""
    from distill.service.remote import download as fetch

    with _client(server) as client:
        path, digest = fetch(client, job, output or Path(f"{job}.tar.gz"))
    print(f"sha256 {digest} matches the server's; check the contents with `distill verify {path}`", file=sys.stderr)
    print(path)
