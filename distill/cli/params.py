"""What every command-line value must be before a command's code runs.

Numbers: every numeric flag declares both bounds (`min=`, `max=`), so a negative, NaN or huge value is
refused by the parser with the flag's name; `tests/test_cli_hostile.py` holds every flag to that. The
bounds shared by several commands live here (one port type for every port flag).

Everything else is checked by `guard_commands`, once for every command: a path that names a device, a
FIFO or a socket is refused before anything opens it (reading /dev/zero never ends; opening a FIFO waits
for a writer), and text that is not valid UTF-8 (Python keeps undecodable argv bytes as lone surrogates)
is refused with the flag's name instead of failing deep inside a JSON write. A command that meets a file
it was given which is not UTF-8 text (a binary file where a JSON or YAML one belongs) names that file and
its flag; the same error from a file the user did not give is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from distill.errors import ConfigError, Problem
from distill.located_yaml import file_kind

MAX_RECORDS = 10_000_000  # the spec schema's bound on `records`
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_NEW_TOKENS = 8192  # the longest context a student may have (student.context_length)
MAX_COUNT = 100_000  # samples, prompts, texts: anything counted per command
MAX_USD = 1e9  # spending caps

PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port (1-65535).")]
RecordsOpt = Annotated[Optional[int], typer.Option("--records", min=1, max=MAX_RECORDS,
                                                   help="Generate this many records instead of the spec's count.")]


def flag_name(param: Any) -> str:
    """`--max-new-tokens` for an option (its long name), `run` for an argument."""
    longest = max(param.opts, key=len) if param.opts else param.name
    return longest if longest.startswith("-") else param.name


def value_problem(value: Any, what: str) -> Problem | None:
    """What is wrong with one parsed value of the flag or argument `what`, or None."""
    if isinstance(value, (list, tuple)):
        return next((p for v in value if (p := value_problem(v, what))), None)
    if isinstance(value, (str, Path)):
        try:
            str(value).encode("utf-8")
        except UnicodeEncodeError:
            raw = str(value).encode("utf-8", "surrogateescape")
            return Problem(f"{raw!r} is not valid UTF-8 text", key=what, hint="pass text in UTF-8")
    if isinstance(value, Path):
        try:
            mode = os.stat(value).st_mode  # follows symlinks: a link to /dev/zero is a device
        except (OSError, ValueError):  # missing, unreadable or an impossible name: the command says so itself
            return None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            return Problem(f"{what} is not a regular file ({file_kind(mode)})", file=value,
                           hint="give a plain file, not a pipe, socket or device")
    return None


def guard(command: Any) -> None:
    """Check `command`'s values before its callback runs: all problems at once, each naming its flag."""
    callback = command.callback
    if callback is None:
        return
    names = {param.name: flag_name(param) for param in command.params}

    @functools.wraps(callback)
    def checked(*args: Any, **values: Any) -> Any:
        problems = [problem for name, value in values.items()
                    if (problem := value_problem(value, names.get(name, name)))]
        if problems:
            raise ConfigError(*problems)
        try:
            return callback(*args, **values)
        except UnicodeDecodeError as exc:  # a reader that trusted a file to be text: name the file if it was given
            problem = undecodable_given_file(values, names, exc)
            if problem is None:
                raise  # not a file the user gave: a bug, with its traceback
            raise ConfigError(problem) from None

    command.callback = checked


def undecodable_given_file(values: dict[str, Any], names: dict[str, str], exc: UnicodeDecodeError) -> Problem | None:
    """The problem with the first file given on the command line that is not UTF-8 text, or None."""
    for name, value in values.items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(path, Path) and path.is_file() and not is_text(path):
                return Problem(f"{names.get(name, name)} is not UTF-8 text ({exc.reason})", file=path,
                               hint="give a text file")
    return None


def is_text(path: Path, limit: int = 16 << 20) -> bool:
    """Whether the file's first `limit` bytes decode as UTF-8 (a character cut at the limit is allowed)."""
    with open(path, "rb") as handle:
        head = handle.read(limit)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return len(head) == limit and exc.start >= limit - 4
    return True


def guard_commands(command: Any) -> Any:
    """Guard `command` and every sub-command under it; returns `command`."""
    guard(command)
    for sub in (getattr(command, "commands", None) or {}).values():
        guard_commands(sub)
    return command


def stage_command(name: str, where: Path | tuple[Path, str], loaded: Any = None, **flags: Any) -> tuple[Any, Any]:
    """Run stage `name` as its command does (`distill.stage_table.run_command`), after a cheap look at the
    run's lock: a command that finds the run busy says so at once, not after the stage table's imports
    (torch, transformers: seconds). `where`: the run directory, or (runs folder, run id) for generate."""
    from distill.rundir import run_path
    from distill.runlock import refuse_if_locked

    path = run_path(loaded.spec.name, root=where[0], run_id=where[1]) if isinstance(where, tuple) else Path(where)
    refuse_if_locked(path)
    from distill.stage_table import run_command  # lazy: the CLI's start-up time

    return run_command(name, where, loaded, **flags)
