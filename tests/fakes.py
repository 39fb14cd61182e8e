"""Small fakes for unit tests: a clock whose sleeps advance time instantly."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Monotonic time that moves only when something sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def max_in_window(timestamps: list[float], window_s: float = 1.0) -> int:
    """The most timestamps that fall in any half-open window [t, t + window_s)."""
    ordered = sorted(timestamps)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        j = max(j, i)
        while j < len(ordered) and ordered[j] < start + window_s:
            j += 1
        best = max(best, j - i)
    return best


class Sleeps:
    """An injected sleep that records delays and returns at once (no real waiting)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
