"""The `distill` command line: one command per stage, plus `run`.

Each command module imports only typer and the standard library at the top; torch, the SDKs and
datasets load inside the command that needs them, so `distill --help` is instant.
"""

from __future__ import annotations

import errno
import functools
import sys

import typer

from distill.cli import coldstart as coldstart_commands
from distill.cli import evaluate as evaluate_commands
from distill.cli import params
from distill.cli import generate as generate_commands
from distill.cli import release as release_commands
from distill.cli import review as review_commands
from distill.cli import remote as remote_commands
from distill.cli import run as run_command
from distill.cli import serve as serve_commands
from distill.cli import serve_model as serve_model_commands
from distill.cli import spec as spec_commands
from distill.cli import train as train_commands

app = typer.Typer(
    name="distill",
    help="Distillation-as-a-service: task spec -> teacher-written dataset -> safety review -> small student -> released weights.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command in (spec_commands.validate, spec_commands.schema, spec_commands.preview, spec_commands.init,
                generate_commands.plan, generate_commands.generate):
    app.command()(command)
app.add_typer(review_commands.app, name="review")
app.command("train")(train_commands.train_command)
app.command("sample")(train_commands.sample_command)
app.command("eval")(evaluate_commands.eval_command)
app.command("inspect")(evaluate_commands.inspect_command)
app.command()(release_commands.release)
app.command()(release_commands.export)
app.command()(release_commands.verify)
app.command()(release_commands.keygen)
app.command()(run_command.run)
app.command()(serve_commands.serve)
app.add_typer(serve_commands.admin, name="admin")
app.add_typer(remote_commands.app, name="remote")
app.command("serve-model")(serve_model_commands.serve_model)
app.add_typer(serve_model_commands.captures_app, name="captures")
for command in (coldstart_commands.coldstart, coldstart_commands.compare, coldstart_commands.drift,
                coldstart_commands.promote, coldstart_commands.rollback):
    app.command()(command)


# The machine's answer to a write or read that a user can fix (permissions, a full disk, a file-size limit):
# a located one-line message, not a traceback. Other OSErrors stay bugs and keep theirs.
ENVIRONMENT_ERRNOS = {errno.EACCES: "check the folder's permissions", errno.EPERM: "check the folder's permissions",
                      errno.EROFS: "the file system is read-only; use a writable --runs-dir",
                      errno.ENOSPC: "the disk is full; free space and run the same command again to resume",
                      errno.EDQUOT: "the disk quota is used up; free space and run the same command again",
                      errno.EFBIG: "a file-size limit was hit; raise it (ulimit -f) and run the command again",
                      errno.ENOENT: "check the path", errno.ENOTDIR: "check the path", errno.EISDIR: "check the path",
                      errno.EEXIST: "a file stands where a folder should be; check the path"}


@functools.cache
def command():
    """The app as one click command, every command's values guarded (`distill.cli.params`); built once."""
    return params.guard_commands(typer.main.get_command(app))


def main() -> None:
    """Console entry point: user mistakes become a clean message and exit code 2, no traceback."""
    from distill.errors import DistillError

    try:
        command()(prog_name="distill")
    except DistillError as exc:
        from distill.keys import keys_in_use, redact_secrets

        for problem in exc.problems:  # a provider's message may echo a key: redacted by shape and by value
            print(f"error: {redact_secrets(str(problem), extra=keys_in_use())}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror} ({ENVIRONMENT_ERRNOS[exc.errno]}; finished work is kept)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
        sys.exit(130)
