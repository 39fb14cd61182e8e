"""One client-side rate limiter per API key: request starts spaced 1/R seconds apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Lets at most ``requests_per_second`` requests start in any one-second window.

    Starts are spaced at least ``1 / requests_per_second`` apart, so there is no burst even
    after an idle period: the free 1inch plan allows exactly one request a second and counts
    every request, retries included. Waiters are served in arrival order.
    """

    def __init__(
        self,
        requests_per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        self.interval_s = 1.0 / requests_per_second
        self._clock = clock
        self._sleep = sleep
        self._next_start = -float("inf")
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until the next request may start, and claim that slot."""
        async with self._lock:
            now = self._clock()
            while now < self._next_start:
                await self._sleep(self._next_start - now)
                now = self._clock()
            self._next_start = now + self.interval_s
