"""One rate budget per provider key, and one spending cap per run, shared by every process of a Ray cluster.

Each synthesis shard would otherwise pace itself to the spec's requests and tokens per minute, and N
shards together would send N times the limit. Instead a `RateBudget` actor runs the one-process
`RateLimiter` for all of them: a shard asks it for an allowance before each request (`acquire`
returns when the request may leave, evenly spaced across the whole cluster), reports the real token
use after (`correct`), and passes on a 429's Retry-After (`pause`) so every shard holds back.

The actor is named after the provider key (provider, endpoint, API key variable) and detached, so
concurrent runs against the same key share it too; it needs no CPU.

Likewise each shard would check the spending cap against its own spending, and N shards could spend N
times the cap. A `SpendBudget` actor, started by the run's driver, holds the run's one `SpendingCap`:
every shard reserves a request's worst case there before sending it and settles the real cost after.
A shard whose worker died cannot settle what it had in flight; when Ray runs the shard again, the new
attempt's first call (`rejoin`) books those requests at their worst case, since the provider may have
billed them.
"""

from __future__ import annotations

import hashlib

import ray

from distill.spec import Teacher
from distill.synthesis.engine import RateLimiter
from distill.synthesis.spending import SpendingCap

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


@ray.remote(num_cpus=0, max_concurrency=10_000)
class SpendBudget:
    """The run's spending cap, for all its shards: `max_usd` (None: no cap), `spent_before` already spent."""

    def __init__(self, max_usd: float | None, spent_before: float):
        self.cap = SpendingCap(max_usd, spent_before)
        self.holds: dict[int, list[float]] = {}  # shard -> the worst cases of its requests in flight

    async def rejoin(self, shard: int) -> None:
        """A (new attempt of a) shard starts: what an earlier attempt left in flight counts as spent."""
        for usd in self.holds.pop(shard, []):
            await self.cap.settle(usd, usd)

    async def reserve(self, shard: int, usd: float) -> bool:
        if not await self.cap.reserve(usd):
            return False
        self.holds.setdefault(shard, []).append(usd)
        return True

    async def settle(self, shard: int, reserved: float, spent: float) -> None:
        self.holds[shard].remove(reserved)
        await self.cap.settle(reserved, spent)

    async def spent(self) -> float:
        """What the run has spent (earlier runs included), with requests lost with a dead worker at their worst case."""
        return self.cap.spent


class SharedCap:
    """The engine's `Cap` for shard `shard`, backed by the run's `SpendBudget` actor."""

    def __init__(self, budget: ray.actor.ActorHandle, shard: int):
        self.budget, self.shard = budget, shard
        ray.get(budget.rejoin.remote(shard))

    async def reserve(self, usd: float) -> bool:
        return await self.budget.reserve.remote(self.shard, usd)

    async def settle(self, reserved: float, spent: float) -> None:
        await self.budget.settle.remote(self.shard, reserved, spent)


def spend_budget(max_usd: float | None, spent_before: float) -> ray.actor.ActorHandle:
    """A run's cap, owned by the calling driver (it ends with the driver)."""
    return SpendBudget.remote(max_usd, spent_before)
