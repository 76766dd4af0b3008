"""One writer per run: an exclusive `flock` on `RUN/locks/run.lock` for the time a command works on a run.

A second command on the same run fails at once with who holds it (pid, host, command, since) instead of
racing the first: two `generate`s would both buy every record, two `train`s crash each other, three
`release`s leave a bundle without weights. Generate shards (`--shard i/N`) are meant to run side by side:
each holds the run lock shared plus its own shard lock exclusively, so shards run together but never beside
a whole-run command, and never twice.

`flock` locks belong to the open file, so the kernel drops them when the process dies (`kill -9`
included): there is no stale lock to clean up. The lock is re-entrant within a process, so `distill run`
holds it once while each stage it calls takes it again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.errors import Problem, RunDirError

LOCKS = "locks"
RUN_LOCK = "run.lock"

_held: dict[tuple[str, int], int] = {}  # (lock file, flock mode) -> nesting depth in this process


class RunLockedError(RunDirError):
    """Another process works on this run (or this shard of it)."""


def holder_record() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(_command()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _command() -> list[str]:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "-m")):
        argv[0] = "distill"
    return [os.path.basename(argv[0]) if argv else "python", *argv[1:]][:12]


@contextmanager
def run_lock(run_path: Path, *, shard: tuple[int, int] | None = None, driver: bool = False) -> Iterator[None]:
    """Hold the run exclusively; or, for a generate shard, shared plus the shard's own lock; or, for the
    driver of distributed shards (`--executor ray`), shared plus the one driver lock."""
    folder = Path(run_path) / LOCKS
    if driver:
        with _flock(folder / RUN_LOCK, fcntl.LOCK_SH, run_path), \
                _flock(folder / "generate-driver.lock", fcntl.LOCK_EX, run_path):
            yield
        return
    if shard is None or shard == (0, 1):
        with _flock(folder / RUN_LOCK, fcntl.LOCK_EX, run_path):
            yield
        return
    with _flock(folder / RUN_LOCK, fcntl.LOCK_SH, run_path), \
            _flock(folder / f"generate-shard-{shard[0]}-of-{shard[1]}.lock", fcntl.LOCK_EX, run_path):
        yield


def refuse_if_locked(run_path: Path) -> None:
    """Raise RunLockedError at once when another process holds the run exclusively: a cheap look before a
    command's slow imports (the lock itself is still taken, and can still refuse, when the work starts)."""
    path = Path(run_path) / LOCKS / RUN_LOCK
    if not path.is_file() or _held.get((str(path.resolve()), fcntl.LOCK_EX)):
        return
    with open(path, "a+", encoding="utf-8") as handle:  # closing it drops the shared lock taken to look
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(_locked_problem(path, Path(run_path))) from None


@contextmanager
def _flock(path: Path, mode: int, run_path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (str(path.resolve()), mode)
    if _held.get(key) or (mode == fcntl.LOCK_SH and _held.get((key[0], fcntl.LOCK_EX))):
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(_locked_problem(path, run_path)) from None
        if mode == fcntl.LOCK_EX:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder_record()) + "\n")
            handle.flush()
        else:
            _write_shared_holder(path)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            if mode == fcntl.LOCK_SH:
                _holder_file(path).unlink(missing_ok=True)
    finally:
        handle.close()  # closing drops the flock


def _holder_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.shared-{os.getpid()}.json")


def _write_shared_holder(path: Path) -> None:
    _holder_file(path).write_text(json.dumps(holder_record()) + "\n", encoding="utf-8")


def _locked_problem(path: Path, run_path: Path) -> Problem:
    holders = _holders(path)
    who = "; ".join(f"pid {h.get('pid')} on {h.get('host')} running `{h.get('command')}` since {h.get('since')}"
                    for h in holders) or "another process"
    return Problem(f"the run is locked by {who}", file=run_path,
                   hint="wait for it to finish (or stop it) and run this command again; "
                        "one command works on a run at a time")


def _holders(path: Path) -> list[dict[str, object]]:
    """Who holds `path`: the exclusive holder's record in the file, or the shared holders' own files."""
    candidates = [path, *sorted(path.parent.glob(f"{path.name}.shared-*.json"))]
    candidates += sorted(p for p in path.parent.glob("generate-*.lock"))
    holders = []
    for candidate in candidates:
        try:
            record = json.loads(candidate.read_text(encoding="utf-8").strip() or "null")
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and _alive(record) and record not in holders:
            holders.append(record)
    return holders


def _alive(record: dict[str, object]) -> bool:
    """A record from a process that is gone is stale (its lock went with it)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record.get("pid", 0)), 0)  # type: ignore[arg-type]
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
