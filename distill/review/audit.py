"""The review's audit log: `RUN/review/audit.jsonl`, append-only and hash-chained.

Every entry records who did what to which records, when, and the state before and after. Each line
carries the hash of the previous line and its own hash over (previous hash + its canonical JSON), and
`audit.head` holds the count and last hash. Editing, deleting, reordering or inserting a line breaks
the chain; cutting lines off the end disagrees with the head. (Someone who rewrites the whole log and
the head together is not detected: anchor the head elsewhere, e.g. in the release manifest, for that.)
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


def _last_entry(path: Path) -> dict[str, Any] | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            handle.seek(start)
            tail = handle.read(size - start)
            lines = tail.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return json.loads(lines[-1])
            chunk *= 4


def append_entry(review_dir: Path, *, reviewer: str, action: str, ids: list[int] | None = None,
                 before: Any = None, after: Any = None, note: str = "") -> dict[str, Any]:
    """Append one entry (fsynced) and move the head. Returns the entry with its hash."""
    log = review_dir / LOG
    with _locked(review_dir):
        last = _last_entry(log)
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
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def head_hash(review_dir: Path) -> str:
    last = _last_entry(review_dir / LOG)
    return last["hash"] if last else GENESIS


def verify_log(review_dir: Path) -> list[str]:
    """Problems with the log, naming the line; an empty list means the chain is intact."""
    log = review_dir / LOG
    if not log.exists():
        return [] if not (review_dir / HEAD).exists() else [f"{log} is missing but {HEAD} says entries were written"]
    problems = []
    prev = GENESIS
    count = 0
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            problems.append(f"{log}:{number}: blank line")
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{log}:{number}: not JSON")
            prev = None
            continue
        claimed = entry.pop("hash", None)
        if entry.get("seq") != count:
            problems.append(f"{log}:{number}: sequence number {entry.get('seq')} where {count} was expected (a line was deleted or moved)")
        if prev is not None and entry.get("prev") != prev:
            problems.append(f"{log}:{number}: does not chain to the line before it (edited, inserted or deleted)")
        if _digest(entry.get("prev", ""), entry) != claimed:
            problems.append(f"{log}:{number}: content does not match its hash (edited)")
        prev = claimed
        count += 1
    head_path = review_dir / HEAD
    if not head_path.exists():
        problems.append(f"{head_path} is missing")
    else:
        head = json.loads(head_path.read_text())
        if head.get("count") != count or head.get("hash") != prev:
            problems.append(f"{head_path}: says {head.get('count')} entries ending {str(head.get('hash'))[:12]}, "
                            f"the log has {count} ending {str(prev)[:12]} (lines removed from the end, or the head edited)")
    return problems
