"""The review's audit log: `RUN/review/audit.jsonl`, append-only and hash-chained.

Every entry records who did what to which records, when, and the state before and after. Each line
carries the hash of the previous line and its own hash over (previous hash + its canonical JSON), and
`audit.head` holds the count and last hash. Editing, deleting, reordering or inserting a line breaks
the chain; cutting lines off the end disagrees with the head. Someone who rewrites the whole log and
the head together is not detected here: the signed checkpoints (`checkpoints.py`) and a released
manifest anchor the head where that rewrite cannot reach.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distill.errors import Problem, RunDirError
from distill.files import write_atomic

LOG = "audit.jsonl"
HEAD = "audit.head"
GENESIS = "0" * 64


def _digest(prev: str, entry: dict[str, Any]) -> str:
    body = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode("utf-8")).hexdigest()


@contextmanager
def _locked(review_dir: Path) -> Iterator[None]:
    """One writer at a time: two reviewers' commands must not interleave half-lines."""
    review_dir.mkdir(parents=True, exist_ok=True)
    with open(review_dir / "audit.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _complete_size(path: Path) -> int:
    """Bytes up to the end of the last complete line: a line cut by a crash or a full disk is not part
    of the log (its entry never reached the head either)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        position = size
        while position > 0:
            start = max(0, position - (1 << 16))
            handle.seek(start)
            block = handle.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
        return 0


def _last_entry(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    end = _complete_size(path)
    if end == 0:
        return None
    with open(path, "rb") as handle:
        chunk = 1 << 16
        while True:
            start = max(0, end - chunk)
            handle.seek(start)
            lines = handle.read(end - start).rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return _parse_line(lines[-1], path)
            chunk *= 4


def _parse_line(line: bytes | str, path: Path, number: int | None = None) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        entry = None
    if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int) or not isinstance(entry.get("hash"), str):
        raise RunDirError(Problem("the audit log has a line that is not an audit entry", file=path, line=number,
                                  hint="check it with `distill review RUN --verify-log` and restore the log from a copy"))
    return entry


def append_entry(review_dir: Path, *, reviewer: str, action: str, ids: list[int] | None = None,
                 before: Any = None, after: Any = None, note: str = "") -> dict[str, Any]:
    """Append one entry (fsynced) and move the head. Returns the entry with its hash."""
    log = review_dir / LOG
    with _locked(review_dir):
        last = _last_entry(log)
        if log.exists() and _complete_size(log) < log.stat().st_size:
            os.truncate(log, _complete_size(log))  # drop a line cut by a crash before appending after it
        entry = {
            "seq": last["seq"] + 1 if last else 0,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reviewer": reviewer,
            "action": action,
            "ids": ids or [],
            "before": before,
            "after": after,
            "note": note,
            "prev": last["hash"] if last else GENESIS,
        }
        entry["hash"] = _digest(entry["prev"], entry)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        write_atomic(review_dir / HEAD, json.dumps({"count": entry["seq"] + 1, "hash": entry["hash"]}) + "\n")
    return entry


def read_log(review_dir: Path) -> list[dict[str, Any]]:
    log = review_dir / LOG
    if not log.exists():
        return []
    text = log.read_bytes()[:_complete_size(log)].decode("utf-8", errors="replace")
    return [_parse_line(line, log, number) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def head_hash(review_dir: Path) -> str:
    last = _last_entry(review_dir / LOG)
    return last["hash"] if last else GENESIS


def verify_log(review_dir: Path) -> list[str]:
    """Problems with the log, naming the line; an empty list means the chain is intact."""
    log = review_dir / LOG
    if not log.exists():
        if (review_dir / HEAD).exists():
            return [f"{log} is missing but {HEAD} says entries were written"]
        reviewed = [name for name in ("records.jsonl", "signoff.json", "sample.json") if (review_dir / name).exists()]
        return [f"{log} and {HEAD} are missing although the run was reviewed ({', '.join(reviewed)} exist)"] \
            if reviewed else []
    problems = []
    prev: str | None = GENESIS
    count = 0
    text = log.read_bytes()[:_complete_size(log)].decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            problems.append(f"{log}:{number}: blank line")
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            problems.append(f"{log}:{number}: not an audit entry (not a JSON object)")
            prev = None
            continue
        claimed = entry.pop("hash", None)
        if entry.get("seq") != count:
            problems.append(f"{log}:{number}: sequence number {entry.get('seq')} where {count} was expected (a line was deleted or moved)")
        if prev is not None and entry.get("prev") != prev:
            problems.append(f"{log}:{number}: does not chain to the line before it (edited, inserted or deleted)")
        if _digest(str(entry.get("prev", "")), entry) != claimed:
            problems.append(f"{log}:{number}: content does not match its hash (edited)")
        prev = claimed
        count += 1
    head_path = review_dir / HEAD
    if not head_path.exists():
        problems.append(f"{head_path} is missing")
    else:
        try:
            head = json.loads(head_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            head = None
        if not isinstance(head, dict):
            problems.append(f"{head_path}: corrupt (not a JSON object with count and hash)")
        elif head.get("count") != count or head.get("hash") != prev:
            problems.append(f"{head_path}: says {head.get('count')} entries ending {str(head.get('hash'))[:12]}, "
                            f"the log has {count} ending {str(prev)[:12]} (lines removed from the end, or the head edited)")
    return problems
