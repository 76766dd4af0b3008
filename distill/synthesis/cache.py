"""The content-addressed answer cache: nothing already answered is ever paid for again.

The key is the sha256 of everything that determines an answer: provider, model, the full rendered
messages, the generation parameters, the JSON schema and the record's sample index (so two records
with the same prompt still get their own, independently sampled, answers). Change a template or a
parameter and exactly the affected keys change.

SQLite in WAL mode: several processes (shards) may write at once, and a `kill -9` at any moment leaves
either the whole answer or nothing. Two tables: `answers` holds usable answers (the provider finished
normally); `unusable` remembers answers that were paid for but cannot be used (truncated at max_tokens,
refused) so a re-run records the same failure instead of paying for it again. Provider faults (5xx,
timeouts) are never stored: a re-run tries those requests again. An answer with lone surrogates (bytes
that were not UTF-8) is stored as a BLOB of its `surrogatepass` encoding and read back unchanged.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distill.errors import Problem, RunDirError
from distill.providers.logprobs import TokenLogprobs
from distill.providers.protocol import TeacherReply, TeacherRequest

# What SQLite says when the machine, not the database, is the problem: a full disk, a failing or read-only one.
DISK_FAILURES = ("database or disk is full", "disk I/O error", "attempt to write a readonly database",
                 "unable to open database file")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, finish_reason TEXT NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, model TEXT NOT NULL, cost_usd REAL NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unusable (
    key TEXT PRIMARY KEY, text TEXT NOT NULL, finish_reason TEXT NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, model TEXT NOT NULL, cost_usd REAL NOT NULL, reason TEXT NOT NULL
);
"""


def cache_key(provider: str, request: TeacherRequest) -> str:
    """sha256 of what determines the answer (not `step` or `custom_id`, which are only labels)."""
    parts = {
        "provider": provider,
        "model": request.model,
        "messages": [[m.role, m.content] for m in request.messages],
        "params": request.params,
        "json_schema": request.json_schema,
        "record_index": request.record_index,
    }
    # surrogatepass: a prompt can quote an earlier answer that carried undecodable bytes
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    reply: TeacherReply
    cost_usd: float  # what it cost when it was paid for (batch answers at the batch price)
    reason: str = ""  # why an unusable answer cannot be used ("" for usable ones)


@contextmanager
def disk_failures(path: Path) -> Iterator[None]:
    """SQLite's disk failures as a located RunDirError: the answers stored so far are safe (one answer is
    one transaction), so the fix is to free space and run again."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if str(exc) not in DISK_FAILURES:
            raise
        raise RunDirError(Problem(f"cannot write the answer cache: {exc}", file=path,
                                  hint="is the disk full or read-only? free space and run the same command "
                                       "again to resume; finished work is kept")) from None


class AnswerCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with disk_failures(path):
            # isolation_level=None: every statement commits on its own; one answer is one transaction.
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes (kill -9) in WAL mode
            self._db.executescript(_SCHEMA)
            for table in ("answers", "unusable"):  # caches written before log-probabilities were kept
                columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                if "logprobs" not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN logprobs TEXT")

    def get(self, key: str) -> CachedAnswer | None:
        """A usable answer, or None."""
        return self._get("answers", key)

    def get_unusable(self, key: str) -> CachedAnswer | None:
        return self._get("unusable", key)

    def put(self, key: str, reply: TeacherReply, cost_usd: float) -> None:
        self._put("answers", key, reply, cost_usd, "")

    def put_unusable(self, key: str, reply: TeacherReply, cost_usd: float, reason: str) -> None:
        self._put("unusable", key, reply, cost_usd, reason)

    def total_cost(self) -> float:
        """Everything this cache's answers cost: what the run has spent so far."""
        row = self._db.execute("SELECT (SELECT COALESCE(SUM(cost_usd), 0) FROM answers)"
                               " + (SELECT COALESCE(SUM(cost_usd), 0) FROM unusable)").fetchone()
        return float(row[0])

    def integrity_problem(self) -> str | None:
        """None when SQLite finds the database sound (and it has our tables), else what it found."""
        result = self._db.execute("PRAGMA quick_check").fetchone()[0]
        return None if result == "ok" else str(result)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _get(self, table: str, key: str) -> CachedAnswer | None:
        row = self._db.execute(f"SELECT text, finish_reason, input_tokens, output_tokens, model, cost_usd, reason, "
                               f"logprobs FROM {table} WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        text = row[0].decode("utf-8", "surrogatepass") if isinstance(row[0], bytes) else row[0]
        logprobs = TokenLogprobs.from_json(row[7]) if row[7] else None
        return CachedAnswer(TeacherReply(text, row[1], row[2], row[3], row[4], logprobs), row[5], row[6])

    def _put(self, table: str, key: str, reply: TeacherReply, cost_usd: float, reason: str) -> None:
        # OR IGNORE: the first answer stored for a key wins, so concurrent shards agree on it.
        fields = {name: getattr(reply, name) for name in ("text", "finish_reason", "input_tokens", "output_tokens", "model")}
        try:
            fields["text"].encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates (undecodable bytes kept as they came): stored as bytes
            fields["text"] = fields["text"].encode("utf-8", "surrogatepass")
        with disk_failures(self.path):
            self._db.execute(
                f"INSERT OR IGNORE INTO {table} (key, text, finish_reason, input_tokens, output_tokens, model, "
                f"cost_usd, reason, logprobs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, fields["text"], fields["finish_reason"], fields["input_tokens"], fields["output_tokens"],
                 fields["model"], cost_usd, reason, reply.logprobs.to_json() if reply.logprobs is not None else None),
            )
