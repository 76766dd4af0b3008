"""The hard spending cap: every request reserves its worst-case cost before it is sent.

A request whose reservation does not fit under the cap is not sent while other requests are in flight
(their real cost is usually below their worst case, so room may come back); with nothing in flight and
still no room, the cap is reached and every later reservation is refused too. So concurrent requests
can never overshoot the cap together.

`SpendingCap` is the cap of one process. A distributed executor passes the engine a `Cap` that asks one
cap shared by all its processes (`distill.scale.ray_budget.SharedCap`), so N shards together spend at
most the cap, not N times it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Cap(Protocol):
    async def reserve(self, usd: float) -> bool:
        """Hold `usd` of the cap for a request about to be sent; False: the cap is reached, do not send."""

    async def settle(self, reserved: float, spent: float) -> None:
        """A request that reserved `reserved` is over: it cost `spent` (0 when it failed, it is not billed)."""


class SpendingCap:
    """`max_usd` (None: no cap), of which `spent_before` was spent by earlier runs of the same run directory."""

    def __init__(self, max_usd: float | None, spent_before: float = 0.0):
        self.max_usd = max_usd
        self.spent = spent_before  # booked: earlier runs' and the settled requests' real cost
        self.reserved = 0.0  # worst-case cost of the requests in flight
        self.in_flight = 0  # requests holding a reservation
        self.reached = False  # a reservation was refused: the run stops at the cap
        self.room = asyncio.Condition()  # signalled when a reservation is settled

    @property
    def exhausted(self) -> bool:
        """Nothing at all is left: no request can be sent."""
        return self.max_usd is not None and self.spent >= self.max_usd

    def fits(self, usd: float) -> bool:
        return self.max_usd is None or self.spent + self.reserved + usd <= self.max_usd

    def try_reserve(self, usd: float) -> bool:
        """Hold `usd` now, or say it does not fit (then the cap is reached)."""
        if self.reached or not self.fits(usd):
            self.reached = True
            return False
        self.reserved += usd
        self.in_flight += 1
        return True

    async def reserve(self, usd: float) -> bool:
        """Single-threaded asyncio: nothing runs between the check and the booking."""
        async with self.room:
            while not self.reached and not self.fits(usd) and self.in_flight:
                await self.room.wait()
            granted = self.try_reserve(usd)
            if not granted:
                self.room.notify_all()  # the others waiting for room stop too
            return granted

    async def settle(self, reserved: float, spent: float) -> None:
        async with self.room:
            self.settle_now(reserved, spent)
            self.room.notify_all()

    def settle_now(self, reserved: float, spent: float) -> None:
        self.spent += spent
        # The last request out clears the sum, so float rounding never leaves a phantom reservation.
        self.reserved = max(0.0, self.reserved - reserved) if self.in_flight > 1 else 0.0
        self.in_flight -= 1

    def settle_all(self, spent: float) -> None:
        """Batch mode: every reservation is over at once, the batches' results cost `spent` together."""
        self.spent += spent
        self.reserved, self.in_flight = 0.0, 0
