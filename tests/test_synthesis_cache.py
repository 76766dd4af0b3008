"""The answer cache: keys, usable vs unusable answers, concurrent writers from several processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from distill.providers.protocol import Message, TeacherReply, TeacherRequest
from distill.synthesis.cache import AnswerCache, cache_key


def request(**changes) -> TeacherRequest:
    fields = dict(messages=(Message("user", "hi"),), model="m", params={"temperature": 1.0}, record_index=0)
    return TeacherRequest(**{**fields, **changes})


def test_key_covers_everything_that_changes_the_answer_and_nothing_else():
    base = cache_key("openai", request())
    assert cache_key("openai", request(step="x", custom_id="r0-s0")) == base
    for changed in (cache_key("anthropic", request()), cache_key("openai", request(model="n")),
                    cache_key("openai", request(messages=(Message("user", "hi!"),))),
                    cache_key("openai", request(params={"temperature": 0.5})),
                    cache_key("openai", request(json_schema={"type": "object"})),
                    cache_key("openai", request(record_index=1))):
        assert changed != base


def test_usable_and_unusable_answers_are_kept_apart(tmp_path):
    cache = AnswerCache(tmp_path / "cache.sqlite")
    cache.put("a", TeacherReply("story", "stop", 3, 5, "m"), 0.25)
    cache.put("a", TeacherReply("other", "stop", 3, 5, "m"), 0.25)  # the first answer wins
    cache.put_unusable("b", TeacherReply("half", "length", 3, 9, "m"), 0.5, "truncated")
    assert cache.get("a").reply.text == "story" and cache.get("b") is None
    assert cache.get_unusable("b").reason == "truncated"
    assert cache.total_cost() == 0.75 and len(cache) == 1


def _writer(path: str, start: int) -> None:
    cache = AnswerCache(Path(path))
    for i in range(start, start + 200):
        cache.put(f"k{i}", TeacherReply(f"t{i}", "stop", 1, 1, "m"), 0.0)
    cache.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    AnswerCache(Path(path)).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, start)) for start in (0, 100, 200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert len(AnswerCache(Path(path))) == 400
