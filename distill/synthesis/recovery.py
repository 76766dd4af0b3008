"""A lost or corrupt answer cache is rebuilt from the records log, never silently bought again.

Every finished row in `records*.jsonl` carries the cache entries it was built from (`answers`: key, text,
tokens, cost). Opening the cache for a run therefore (1) sets a cache SQLite cannot read aside as
`cache.corrupt-<time>.sqlite`, saying so, and (2) puts back every logged answer the cache lacks, so the
answers and the run's spending total survive a corrupt, emptied or deleted cache. Answers paid for but
not yet in a finished row (a record interrupted between its steps) live only in the cache; those are the
only ones a lost cache can cost again.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

from distill.providers.logprobs import TokenLogprobs
from distill.providers.protocol import TeacherReply
from distill.synthesis.cache import AnswerCache
from distill.synthesis.dataset import read_log

CACHE = "cache.sqlite"


def open_cache(generate_dir: Path) -> AnswerCache:
    """The run's answer cache, readable and holding every answer the records log knows."""
    path = generate_dir / CACHE
    try:
        cache = AnswerCache(path)
        problem = cache.integrity_problem()
    except sqlite3.DatabaseError as exc:
        cache, problem = None, str(exc)
    if problem is not None:
        if cache is not None:
            cache.close()
        aside = set_aside(path)
        print(f"warning: the answer cache {path} is corrupt ({problem}); set aside as {aside.name} and rebuilt "
              f"from the records log", file=sys.stderr)
        cache = AnswerCache(path)
    restored = restore_from_logs(cache, generate_dir)
    if restored:
        print(f"answer cache: restored {restored:,} answers from the records log (nothing is bought twice)", file=sys.stderr)
    return cache


def set_aside(path: Path) -> Path:
    """Move the database and its WAL files out of the way, keeping them for inspection."""
    aside = path.with_name(f"cache.corrupt-{time.strftime('%Y%m%dT%H%M%S')}.sqlite")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.replace(Path(f"{aside}{suffix}"))
    return aside


def restore_from_logs(cache: AnswerCache, generate_dir: Path) -> int:
    """Put every answer the records logs hold and the cache lacks back into it; returns how many."""
    restored = 0
    for log in sorted(generate_dir.glob("records*.jsonl")):
        for row in read_log(log).values():
            for answer in json.loads(row.get("answers") or "[]"):
                if cache.get(answer["key"]) or cache.get_unusable(answer["key"]):
                    continue
                logprobs = TokenLogprobs.from_json(answer["logprobs"]) if answer.get("logprobs") else None
                reply = TeacherReply(answer["text"], answer["finish_reason"], answer["input_tokens"],
                                     answer["output_tokens"], answer["model"], logprobs)
                if answer["reason"]:
                    cache.put_unusable(answer["key"], reply, answer["cost_usd"], answer["reason"])
                else:
                    cache.put(answer["key"], reply, answer["cost_usd"])
                restored += 1
    return restored
