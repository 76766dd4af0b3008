"""What job status reads from a run directory (teacher cost so far, progress per stage) follows the
directory's files: polls answer from memory while nothing changed, and see every change."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from distill.providers.protocol import TeacherReply
from distill.service import runner
from distill.service.runner import StampedCache, file_stamp
from distill.synthesis.cache import AnswerCache


def test_cost_so_far_follows_the_answer_cache_while_it_is_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert runner.spent_usd(run_dir) == 0.0
    cache = AnswerCache(run_dir / "generate" / "cache.sqlite")
    try:
        cache.put("a", TeacherReply("one"), 0.25)
        assert runner.spent_usd(run_dir) == 0.25
        assert runner.spent_usd(run_dir) == 0.25  # asked again, nothing written: the same answer
        cache.put("b", TeacherReply("two"), 0.5)
        cache.put_unusable("c", TeacherReply("three"), 0.125, "refused")
        assert runner.spent_usd(run_dir) == 0.875
    finally:
        cache.close()
    assert runner.spent_usd(run_dir) == 0.875  # the cache closed (its log checkpointed into the file)


def test_cost_so_far_is_zero_while_the_cache_file_has_no_tables_yet(tmp_path: Path) -> None:
    """Status polled in the moment between the generator creating the cache file and its tables."""
    path = tmp_path / "run" / "generate" / "cache.sqlite"
    path.parent.mkdir(parents=True)
    sqlite3.connect(path).execute("CREATE TABLE other (x)").connection.close()
    assert runner.spent_usd(tmp_path / "run") == 0.0


def test_progress_follows_the_manifest_and_the_records_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "generate").mkdir(parents=True)
    (run_dir / "spec.resolved.json").write_text(json.dumps({"records": 3}))
    log = run_dir / "generate" / "records.jsonl"
    log.write_text('{"id": 0}\n')
    first = runner.progress(run_dir)
    assert first["generate"] == {"state": "pending", "seconds": None, "counts": {}, "records_written": 1, "records": 3,
                                 "fraction": 0.3333, "records_per_s": None, "eta_seconds": None}
    first["generate"]["state"] = "changed by a caller"  # a caller's copy: the next poll is not affected
    assert runner.progress(run_dir)["generate"]["state"] == "pending"

    with log.open("a") as handle:
        handle.write('{"id": 1}\n')
    assert runner.progress(run_dir)["generate"]["records_written"] == 2
    (run_dir / "manifest.json").write_text(json.dumps({"stages": {"generate": {"state": "running"}}}))
    assert runner.progress(run_dir)["generate"]["state"] == "running"


def test_requests_that_find_a_value_stale_together_compute_it_once(tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("v1")
    cache = StampedCache()
    computed: list[str] = []
    release = threading.Event()

    def compute() -> str:
        release.wait(5)
        computed.append(source.read_text())
        return source.read_text()

    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get("k", file_stamp(source), compute)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers == ["v1"] * 8 and computed == ["v1"]

    source.write_text("version 2")
    assert cache.get("k", file_stamp(source), compute) == "version 2"
    assert computed == ["v1", "version 2"]


def test_a_bounded_number_of_values_is_kept(tmp_path: Path) -> None:
    cache = StampedCache(keep=2)
    calls: list[int] = []
    for key in (1, 2, 3):
        cache.get(key, (), lambda key=key: calls.append(key) or key)
    assert cache.get(3, (), lambda: calls.append(-3)) == 3 and cache.get(2, (), lambda: calls.append(-2)) == 2
    assert cache.get(1, (), lambda: calls.append(-1) or 1) == 1  # the oldest was dropped: computed again
    assert calls == [1, 2, 3, -1]
