"""One client-side rate limiter per API key: paced request starts that win back time lost to a
late event loop, never more than R starts in one second, and a pause for a ``Retry-After``."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

_ROUNDING_S = 1e-9
"""Less early than this is the schedule's float rounding, not catch-up."""


class PausedTooLong(Exception):
    """``acquire`` would wait for a pause (``RateLimiter.pause``) longer than allowed."""

    def __init__(self, remaining_s: float, max_pause_s: float) -> None:
        self.remaining_s = remaining_s
        self.max_pause_s = max_pause_s
        super().__init__(
            f"paused for another {remaining_s:.1f}s, more than the {max_pause_s:g}s allowed"
        )


class RateLimiter:
    """Lets at most ``requests_per_second`` (R) requests start in any one-second window.

    A request starts when ``acquire`` returns. The free 1inch plan allows exactly one request
    a second and counts every request, retries included; paid plans allow R a second.

    *Pacing.* Starts follow a schedule of slots one interval (1/R s) apart, and waiters are
    served in arrival order.

    *Catch-up.* When the event loop is blocked (a garbage-collector pause, a long parse),
    starts fall behind the schedule. The schedule then advances from the missed slot, not
    from the late start, so the next starts come sooner, ``min_spacing_s`` apart at the
    closest (a quarter interval by default), until the schedule is met again: the time is won
    back instead of being lost for good. That holds for lag up to ``catch_up_s``, whatever
    made it (waiters that came late included); more lag is a pause, not a stall, and saves
    nothing, so there is no burst after an idle period.

    Catch-up is OFF by default (``catch_up_s=0``: every start a full interval after the
    last): it packs starts as close to the limit as the window allows, and with the daemon
    under load (scrapes, garbage-collector pauses between a start and its bytes leaving) the
    simulator refused 8 of 129 requests of a large poll with a 429 even with the margin
    below. 1inch's own tolerance is unknown, and a 429 counts against the plan.

    *The window.* Catching up never breaks the promise: a start also waits until fewer than R
    starts lie in the second before it, so every half-open one-second window holds at most R
    starts whatever the stalls (``tests/test_ratelimit.py`` checks it under random stalls).
    For R below 1 or not a whole number, read: at most ``max(1, floor(R))`` starts in any
    window of that many intervals; with R < 2 nothing is ever caught up. The window also
    bounds what catch-up wins back: the start R places after a late one is still a second
    after it. So a stall costs time only where later windows have no room for what it
    delayed: from nothing to all of it, and on average well under half of what it cost
    without catch-up (in the tests' random stalls, margin aside).

    *The margin.* Catch-up keeps starts as early as the window allows, where jitter between
    this process and the upstream's clock could show one start too many in a second. So a
    window in which anything started early (under an interval after the start before it) is
    lengthened by ``margin_s``, 40 ms: at full rate, R starts every 1.04 s. (The simulator on
    a busy machine refused one poll in twenty at 20 ms.) Pacing one interval after each
    actual start (``catch_up_s=0``) gets its slack from every start's own lateness instead:
    12 to 15 ms a second at the least, at R = 20. With no lateness nothing is early, and
    starts are exactly one interval apart.

    *Pauses.* The rate limit is the key's, not one request's: a ``Retry-After`` that 1inch sends
    on any request holds every start, queued or to come, until it has passed (``pause``). The
    first start after it is not before the pause's end; later ones are paced from there (no
    burst: the pause is not a stall to catch up). A waiter that would still wait longer than
    its ``max_pause_s`` for a pause to end gets ``PausedTooLong`` instead, queued ones included.
    """

    def __init__(
        self,
        requests_per_second: float,
        *,
        catch_up_s: float = 0.0,
        min_spacing_s: float | None = None,
        margin_s: float = 0.04,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not requests_per_second > 0 or not math.isfinite(requests_per_second):
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        self.interval_s = 1.0 / requests_per_second
        self.window_starts = max(1, math.floor(requests_per_second))
        if not 0 <= margin_s < 1:
            raise ValueError(f"margin_s must be at least 0 and below 1, got {margin_s}")
        self.window_s = self.window_starts / requests_per_second
        self.margin_s = margin_s
        if not 0 <= catch_up_s < math.inf:
            raise ValueError(f"catch_up_s must be 0 or more, got {catch_up_s}")
        self.catch_up_s = catch_up_s
        if min_spacing_s is None:
            min_spacing_s = self.interval_s / 4
        if not 0 <= min_spacing_s <= self.interval_s:
            raise ValueError(
                f"min_spacing_s must be between 0 and the interval {self.interval_s:g}s, "
                f"got {min_spacing_s}"
            )
        self.min_spacing_s = min_spacing_s
        self._clock = clock
        self._sleep = sleep
        self._next_slot = -math.inf
        self._recent: deque[tuple[float, bool]] = deque(maxlen=self.window_starts)
        """The last starts, each with whether it came early (under an interval after the one
        before); ``_early_starts`` counts the early ones after the first."""
        self._early_starts = 0
        self._paused_until = -math.inf
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every start until ``seconds`` from now (a ``Retry-After``); a pause already
        running that ends later is kept."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def paused_s(self) -> float:
        """How long the current pause has left; 0 when there is none."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self, *, max_pause_s: float = math.inf) -> None:
        """Wait until the next request may start, and claim that start.

        Raises ``PausedTooLong`` rather than wait more than ``max_pause_s`` for a pause.
        """
        async with self._lock:
            while True:
                now = self._clock()
                if self._paused_until - now > max_pause_s:
                    raise PausedTooLong(self._paused_until - now, max_pause_s)
                slot = self._next_slot
                if now - slot > self.catch_up_s:
                    slot = now  # idle, not a stall: nothing is owed
                slot = max(slot, self._paused_until)
                earliest = self._window_allows_from(slot)
                if now >= earliest:
                    break
                await self._sleep(earliest - now)
            # No await between that check and this record, so the window holds.
            self._record(now)
            self._next_slot = slot + self.interval_s

    def _window_allows_from(self, slot: float) -> float:
        """The earliest start at or after ``slot`` that the recent starts allow:
        ``min_spacing_s`` after the last one, and ``window_s`` (plus the margin if the window
        holds an early start) after the one that would otherwise be one too many."""
        recent = self._recent
        if not recent:
            return slot
        last, _ = recent[-1]
        allowed = max(slot, last + self.min_spacing_s)
        if len(recent) == self.window_starts:
            edge = recent[0][0] + self.window_s
            if self._early_starts or max(allowed, edge) < last + self.interval_s - _ROUNDING_S:
                edge += self.margin_s
            allowed = max(allowed, edge)
        return allowed

    def _record(self, start: float) -> None:
        recent = self._recent
        early = bool(recent) and start < recent[-1][0] + self.interval_s - _ROUNDING_S
        if len(recent) == self.window_starts > 1:
            self._early_starts -= recent[1][1]  # its gap leaves the window with recent[0]
        recent.append((start, early))
        if len(recent) > 1:
            self._early_starts += early
