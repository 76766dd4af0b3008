"""Capturing real inputs, with consent: who is kept, what is written, for how long, and how to delete it.

- Off unless a deployment switches it on; then each request is kept with probability `rate`.
- A request opts out with the header `X-Distill-Capture: off` or `metadata: {"capture": "off"}`
  (also "false", "no", "0"); an opted-out request is never sampled or written.
- Before a line reaches the file, every input message and every output is redacted by the review
  chain's PII and secret detectors: each hit, whatever the policy would do with a training record,
  is replaced by its placeholder (`[EMAIL]`, `[PHONE]`, `[SECRET]`, ...).
- One JSON object per line (format `distill-capture/1`): request id, UTC time, expiry date, endpoint,
  model, the redacted inputs and outputs, and the codes of what was redacted.
- Lines older than `retention_days` are purged when the log opens and at most hourly while it is written
  (and by `distill captures purge`); `delete` removes lines by request id and/or date range.
Writes and rewrites hold an exclusive lock on FILE.lock, so a server and the CLI can share a file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import random
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from distill.errors import ConfigError, Problem
from distill.rundir import write_atomic

FORMAT = "distill-capture/1"
OPT_OUT_HEADER = "x-distill-capture"
_NO = {"off", "false", "no", "0", "opt-out", "optout"}


class DeleteRequest(BaseModel):
    """Which captures to delete: any of these ids, and/or everything created in [since, until)."""

    request_ids: list[str] = Field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None


def opted_out(metadata: Mapping[str, str] | None, headers: Mapping[str, str]) -> bool:
    value = headers.get(OPT_OUT_HEADER) or (metadata or {}).get("capture") or ""
    return value.strip().lower() in _NO


class Redactor:
    """The review chain's PII and secret scanners, every hit replaced by its placeholder."""

    def __init__(self, policy: str = "general"):
        from distill.review.chain import Chain
        from distill.review.policy import load_policy

        self.chain = Chain(load_policy(policy))

    def redact(self, text: str) -> tuple[str, list[str]]:
        """(text with every personal-data and secret hit replaced by its placeholder, the hits' codes)."""
        from distill.review.verdict import apply_redactions

        verdict = self.chain.check(text)
        hits = [dataclasses.replace(f, action="redact") for f in verdict.reasons
                if f.category in ("PII", "SECRET") and f.field == "text"]
        redacted = apply_redactions(verdict.checked_text, hits)
        return (verdict.checked_text if redacted is None else redacted), sorted({f.code for f in hits})


class CaptureLog:
    def __init__(self, path: str | Path, *, rate: float = 1.0, retention_days: int = 30, policy: str = "general",
                 seed: int | None = None):
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(Problem(f"capture rate {rate} is outside 0..1", key="--capture-rate"))
        if retention_days < 1:
            raise ConfigError(Problem("retention must be at least 1 day", key="--retention-days"))
        self.path = Path(path)
        self.rate, self.retention_days = rate, retention_days
        self.redactor = Redactor(policy)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._last_purge = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.purge_expired()

    def wants(self, opted_out: bool) -> bool:
        """Whether to keep this request: never when it opted out, else with probability `rate`."""
        if opted_out or self.rate <= 0:
            return False
        with self._lock:
            return self._random.random() < self.rate

    def record(self, request_id: str, endpoint: str, model: str, inputs: dict[str, Any], outputs: list[str],
               *, now: datetime | None = None) -> dict[str, Any]:
        """Redact, then append one line. Returns the line as written."""
        now = now or datetime.now(timezone.utc)
        codes: set[str] = set()

        def clean(text: str) -> str:
            redacted, found = self.redactor.redact(text)
            codes.update(found)
            return redacted

        if "messages" in inputs:  # whole conversations: tool calls (arguments redacted too) and the tools offered
            kept_inputs = {"messages": [_kept_message(m, clean) for m in inputs["messages"]],
                           **({"tools": inputs["tools"]} if inputs.get("tools") else {})}
        else:
            kept_inputs = {"prompt": [clean(p) for p in inputs["prompt"]]}
        line = {"format": FORMAT, "request_id": request_id, "created": now.isoformat(timespec="seconds"),
                "expires": (now + timedelta(days=self.retention_days)).date().isoformat(), "endpoint": endpoint,
                "model": model, "inputs": kept_inputs, "outputs": [clean(o) for o in outputs],
                "redacted": sorted(codes)}
        with self._lock, locked(self.path):
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
        if time.monotonic() - self._last_purge > 3600:
            self.purge_expired()
        return line

    def delete(self, request: DeleteRequest) -> int:
        return delete_captures(self.path, request)

    def purge_expired(self, now: datetime | None = None) -> int:
        self._last_purge = time.monotonic()
        return purge_expired(self.path, now)


@contextmanager
def locked(path: Path):
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_captures(path: str | Path) -> list[dict[str, Any]]:
    """Every line of a capture file, checked: a line that is not a capture names its line number."""
    path = Path(path)
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(Problem(f"not JSON ({exc.msg})", file=path, line=number)) from None
        if not isinstance(line, dict) or line.get("format") != FORMAT or not isinstance(line.get("inputs"), dict):
            raise ConfigError(Problem(f"not a capture line (expected format {FORMAT!r} and inputs)", file=path,
                                      line=number, hint="captures come from `distill serve-model --capture FILE`"))
        lines.append(line)
    return lines


def rewrite_without(path: Path, drop) -> int:
    """Rewrite the capture file without the lines `drop(line)` selects; returns how many went."""
    if not path.is_file():
        return 0
    with locked(path):
        kept, dropped = [], 0
        for line in read_captures(path):
            if drop(line):
                dropped += 1
            else:
                kept.append(json.dumps(line, ensure_ascii=False) + "\n")
        if dropped:
            write_atomic(path, "".join(kept))
    return dropped


def delete_captures(path: str | Path, request: DeleteRequest) -> int:
    ids = set(request.request_ids)
    since, until = (aware(request.since), aware(request.until))
    if not ids and since is None and until is None:
        raise ConfigError(Problem("say what to delete: request ids, or a date range (since/until)"))

    def selected(line: dict) -> bool:
        if line["request_id"] in ids:
            return True
        if since is None and until is None:
            return False
        created = datetime.fromisoformat(line["created"])
        return (since is None or created >= since) and (until is None or created < until)

    return rewrite_without(Path(path), selected)


def purge_expired(path: str | Path, now: datetime | None = None) -> int:
    today = (now or datetime.now(timezone.utc)).date().isoformat()
    return rewrite_without(Path(path), lambda line: line.get("expires", "9999") <= today)


def aware(moment: datetime | None) -> datetime | None:
    """Dates without a zone are UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment


def _kept_message(message: dict[str, Any], clean) -> dict[str, Any]:
    kept = {"role": message["role"], "content": clean(message["content"])}
    if message.get("tool_calls"):
        kept["tool_calls"] = [{**call, "function": {**call.get("function", {}),
                                                    "arguments": clean(str(call.get("function", {}).get("arguments", "")))}}
                              for call in message["tool_calls"]]
    if message.get("tool_call_id"):
        kept["tool_call_id"] = message["tool_call_id"]
    return kept
