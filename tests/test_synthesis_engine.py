"""Client-side rate limiting: even request pacing, a token budget, and a shared pause on 429."""

from __future__ import annotations

import asyncio
import time

from distill.synthesis.engine import Backoff, RateLimiter


def timed(coroutine) -> float:
    started = time.monotonic()
    asyncio.run(coroutine)
    return time.monotonic() - started


def test_requests_are_spaced_at_the_rpm_limit():
    limiter = RateLimiter(rpm=1200, tpm=None)  # one request per 50 ms
    async def burst():
        await asyncio.gather(*(limiter.acquire(0) for _ in range(11)))
    elapsed = timed(burst())
    assert elapsed >= 0.45  # 10 waits of 50 ms after the first request; no upper bound (busy machines)


def test_token_budget_waits_and_corrects_with_real_usage():
    limiter = RateLimiter(rpm=None, tpm=60_000)  # 1,000 tokens a second, a 10 s bucket
    async def spend():
        await limiter.acquire(10_000)  # the whole bucket
        limiter.correct(10_000, 9_800)  # the real usage was lower: 200 tokens come back
        assert 200 <= limiter.tokens < 300  # (plus what refilled meanwhile)
        await limiter.acquire(500)  # needs 300 more: ~0.3 s
    assert timed(spend()) >= 0.2


def test_a_429_pauses_everyone():
    limiter = RateLimiter(rpm=None, tpm=None)
    async def paused():
        limiter.pause(0.3)
        await asyncio.gather(*(limiter.acquire(0) for _ in range(5)))
    assert timed(paused()) >= 0.28


def test_backoff_grows_with_jitter_and_a_cap():
    backoff = Backoff(base_s=1.0, cap_s=8.0)
    assert 0.5 <= backoff.delay(0) <= 1.5 and 2.0 <= backoff.delay(2) <= 6.0 and backoff.delay(10) <= 12.0
