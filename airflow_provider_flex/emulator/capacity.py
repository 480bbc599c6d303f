"""The flex capacity model: serving slots, tier priority, a bounded flex queue.

All of it runs on the emulator's one event loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

#: The 503 the API sends when a model has no capacity (the text seen in 2026 reports, status UNAVAILABLE).
OVERLOADED_MESSAGE = (
    "This model is currently experiencing high demand. Spikes in demand are usually temporary. Please try again later."
)

#: Tiers in the order a free slot goes to their waiting calls.
TIER_PRIORITY: tuple[str, ...] = ("priority", "standard", "flex")


class CapacityRefusal(Exception):
    """A call the capacity model will not serve; carries the API's answer."""

    code: int = 503
    status: str = "UNAVAILABLE"
    outcome: str = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Shed(CapacityRefusal):
    outcome = "shed"


class Preempted(CapacityRefusal):
    outcome = "preempted"


class QueueDeadlineExceeded(CapacityRefusal):
    code = 504
    status = "DEADLINE_EXCEEDED"
    outcome = "deadline_exceeded"


@dataclass
class _Waiter:
    future: asyncio.Future[None]


class Capacity:
    """``slots`` calls served at once; the rest wait, higher tiers first.

    Standard and priority calls wait as long as it takes; flex calls wait in a
    FIFO of at most ``flex_queue_depth`` and are shed (503) when it is full.
    """

    def __init__(self, slots: int, flex_queue_depth: int) -> None:
        self.slots = slots
        self.flex_queue_depth = flex_queue_depth
        self.free = slots
        self.queues: dict[str, deque[_Waiter]] = {tier: deque() for tier in TIER_PRIORITY}
        self.peak_in_service = 0
        self.peak_queued = 0

    @property
    def in_service(self) -> int:
        return self.slots - self.free

    def queued(self, tier: str | None = None) -> int:
        tiers = TIER_PRIORITY if tier is None else (tier,)
        return sum(len(self.queues[t]) for t in tiers)

    @asynccontextmanager
    async def slot(self, tier: str, *, queue_timeout_s: float, preempt: bool = False) -> AsyncIterator[None]:
        """Hold a serving slot for the body of the ``with`` block.

        ``preempt`` marks a flex call that capacity will evict: it waits its
        turn like any other, then gets 503 instead of the slot.
        """
        await self._acquire(tier, queue_timeout_s)
        if preempt:
            self._release()
            raise Preempted("The flex request was preempted to free capacity for higher-priority traffic.")
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, tier: str, queue_timeout_s: float) -> None:
        if self.free > 0 and not self.queued():
            self._take()
            return
        if tier == "flex" and len(self.queues["flex"]) >= self.flex_queue_depth:
            raise Shed(OVERLOADED_MESSAGE)
        waiter = _Waiter(asyncio.get_running_loop().create_future())
        self.queues[tier].append(waiter)
        self.peak_queued = max(self.peak_queued, self.queued())
        timeout = queue_timeout_s if tier == "flex" else None
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
            if waiter.future.done() and not waiter.future.cancelled():
                return  # the slot arrived as the timer fired: keep it
            self._abandon(tier, waiter)
            raise QueueDeadlineExceeded(
                f"The flex request waited in the queue past its server timeout of {queue_timeout_s:g}s."
            ) from None
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release()  # handed a slot while being cancelled: pass it on
            else:
                self._abandon(tier, waiter)
            raise

    def _abandon(self, tier: str, waiter: _Waiter) -> None:
        waiter.future.cancel()
        with suppress(ValueError):
            self.queues[tier].remove(waiter)

    def _take(self) -> None:
        self.free -= 1
        self.peak_in_service = max(self.peak_in_service, self.in_service)

    def _release(self) -> None:
        for tier in TIER_PRIORITY:
            queue = self.queues[tier]
            while queue:
                waiter = queue.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(None)  # the slot passes straight to the waiter
                    return
        self.free += 1


def format_duration(seconds: float) -> str:
    """Return a protobuf Duration in its JSON form, e.g. ``"0.250s"`` or ``"53s"``."""
    millis = math.ceil(seconds * 1000)
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis / 1000:.3f}s"


async def flex_queue_wait(wait_s: float, server_timeout_s: float) -> None:
    """Wait ``wait_s`` in the flex queue; past the call's server timeout, end it as the API does (504)."""
    if wait_s > server_timeout_s:
        await asyncio.sleep(server_timeout_s)
        raise QueueDeadlineExceeded(
            f"The flex queue did not reach the request within its deadline ({server_timeout_s:.0f}s)."
        )
    await asyncio.sleep(wait_s)
