import asyncio
import itertools

import pytest

from monitor.oneinch.ratelimit import RateLimiter
from tests.fakes import FakeClock, max_in_window


@pytest.mark.parametrize("rate", [1.0, 3.0, 0.5, 25.0])
async def test_concurrent_acquires_are_spaced_one_interval_apart(rate: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        starts.append(clock())

    await asyncio.gather(*(request() for _ in range(20)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) == pytest.approx(1 / rate)
    assert max_in_window(starts) <= max(1, int(rate))


async def test_no_burst_after_an_idle_period() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 60  # idle for a minute: no credit is saved up
    starts = []
    for _ in range(4):
        await limiter.acquire()
        starts.append(clock())
    assert starts == pytest.approx([starts[0] + 0.5 * i for i in range(4)])


async def test_first_request_does_not_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    assert clock.sleeps == []


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def test_max_in_window_counts_half_open_windows() -> None:
    assert max_in_window([0.0, 1.0, 2.0]) == 1
    assert max_in_window([0.0, 0.999, 2.0]) == 2
