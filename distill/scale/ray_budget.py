"""One rate budget per provider key, shared by every process of a Ray cluster.

Each synthesis shard would otherwise pace itself to the spec's requests and tokens per minute, and N
shards together would send N times the limit. Instead a `RateBudget` actor runs the one-process
`RateLimiter` for all of them: a shard asks it for an allowance before each request (`acquire`
returns when the request may leave, evenly spaced across the whole cluster), reports the real token
use after (`correct`), and passes on a 429's Retry-After (`pause`) so every shard holds back.

The actor is named after the provider key (provider, endpoint, API key variable) and detached, so
concurrent runs against the same key share it too; it needs no CPU.
"""

from __future__ import annotations

import hashlib

import ray

from distill.spec import Teacher
from distill.synthesis.engine import RateLimiter

NAMESPACE = "distill"


@ray.remote(num_cpus=0, max_concurrency=10_000)
class RateBudget:
    """The cluster-wide limiter. Its methods are coroutines, so thousands of waiting `acquire` calls
    sleep side by side in the actor's event loop."""

    def __init__(self, rpm: int | None, tpm: int | None):
        self.limits = (rpm, tpm)
        self.limiter = RateLimiter(rpm, tpm)

    async def set_limits(self, rpm: int | None, tpm: int | None) -> None:
        """A run with different limits for the same key: from now on its limits hold."""
        if (rpm, tpm) != self.limits:
            self.limits = (rpm, tpm)
            self.limiter = RateLimiter(rpm, tpm)

    async def acquire(self, estimated_tokens: int) -> None:
        await self.limiter.acquire(estimated_tokens)

    async def correct(self, estimated_tokens: int, actual_tokens: int) -> None:
        self.limiter.correct(estimated_tokens, actual_tokens)

    async def pause(self, seconds: float) -> None:
        self.limiter.pause(seconds)


class SharedLimiter:
    """The engine's `Limiter`, backed by a `RateBudget` actor (it travels to the shards by pickling)."""

    def __init__(self, budget: ray.actor.ActorHandle):
        self.budget = budget

    async def acquire(self, estimated_tokens: int) -> None:
        await self.budget.acquire.remote(estimated_tokens)

    def correct(self, estimated_tokens: int, actual_tokens: int) -> None:
        self.budget.correct.remote(estimated_tokens, actual_tokens)  # nobody waits for the bookkeeping

    def pause(self, seconds: float) -> None:
        self.budget.pause.remote(seconds)


def budget_name(teacher: Teacher) -> str:
    """The actor's name: one budget per provider key. The key itself never leaves the environment;
    the name holds the variable it is read from."""
    endpoint = teacher.base_url or "default"
    key = hashlib.sha256(f"{teacher.provider}|{endpoint}|{teacher.api_key_env}".encode()).hexdigest()[:16]
    return f"rate-budget-{teacher.provider}-{key}"


def shared_limiter(teacher: Teacher) -> SharedLimiter | None:
    """The cluster's budget for this teacher's key (created on first use), or None when the spec sets no limit."""
    rpm, tpm = teacher.rate_limit.rpm, teacher.rate_limit.tpm
    if not rpm and not tpm:
        return None
    budget = RateBudget.options(name=budget_name(teacher), namespace=NAMESPACE, lifetime="detached",
                                get_if_exists=True).remote(rpm, tpm)
    ray.get(budget.set_limits.remote(rpm, tpm))
    return SharedLimiter(budget)
