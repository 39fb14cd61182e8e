"""USD prices from the Spot Price API over real HTTP against the simulator: cache, batches,
failures."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import aiohttp
import pytest

from monitor.domain.addresses import NATIVE_TOKEN
from monitor.memory import StaticPriceSource
from monitor.oneinch import BalanceClient, RateLimiter, Reply
from monitor.oneinch.client import RetryPolicy
from monitor.oneinch.prices import SpotPriceSource
from monitor.ports import PriceSource
from monitor.simulator.faults import Fault
from monitor.simulator.scenario import load_scenario, parse_scenario
from monitor.simulator.server import RunningSimulator, run_simulator
from tests.fakes import Sleeps

USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
UNI = "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
LOCAL = "0x4a6f0e7d3c5b2a1908f7e6d5c4b3a29180706050"  # custom token without a USD price
UNLISTED = "0x" + "99" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingClient(BalanceClient):
    """The real client, noting the tokens of each price request it is asked to make."""

    batches: list[list[str]]

    async def prices(
        self, chain_id: int, tokens: Sequence[str], *, currency: str | None = None
    ) -> Reply[dict[str, Decimal]]:
        self.batches.append(list(tokens))
        assert currency == "USD"
        return await super().prices(chain_id, tokens, currency=currency)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with run_simulator(load_scenario(None)) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def client_for(session: aiohttp.ClientSession, base_url: str) -> RecordingClient:
    client = RecordingClient(
        session,
        base_url=base_url,
        api_key=None,
        limiter=RateLimiter(1000),
        timeout_s=5.0,
        retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01),
        sleep=Sleeps(),
    )
    client.batches = []
    return client


def price_requests(sim: RunningSimulator) -> int:
    return sum(1 for r in sim.requests if r.path.startswith("/price/"))


async def test_prices_are_usd_per_whole_token_and_unpriced_tokens_are_absent(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    source = SpotPriceSource(client_for(session, sim.base_url), clock=Clock())
    found = await source.usd_prices(1, [USDC, UNI.upper().replace("0X", "0x"), LOCAL, UNLISTED])
    assert found == {USDC: Decimal("1.00"), UNI: Decimal("9.50")}
    assert all(isinstance(p, Decimal) for p in found.values())
    assert [r.method for r in sim.requests] == ["POST"]


async def test_answers_are_cached_for_the_ttl_including_no_price(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    source = SpotPriceSource(client_for(session, sim.base_url), ttl_s=300, clock=clock)
    first = await source.usd_prices(1, [USDC, LOCAL])
    clock.now += 299
    assert await source.usd_prices(1, [USDC, LOCAL]) == first
    assert price_requests(sim) == 1  # LOCAL's "no price" was cached too
    clock.now += 1
    assert await source.usd_prices(1, [USDC, LOCAL]) == first
    assert price_requests(sim) == 2


async def test_only_the_tokens_not_cached_are_asked(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    client = client_for(session, sim.base_url)
    source = SpotPriceSource(client, clock=Clock())
    await source.usd_prices(1, [USDC])
    found = await source.usd_prices(1, [USDC, WETH, WETH.upper().replace("0X", "0x")])
    assert found == {USDC: Decimal("1.00"), WETH: Decimal("3500")}
    assert client.batches == [[USDC], [WETH]]


async def test_the_cache_is_per_chain(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    source = SpotPriceSource(client_for(session, sim.base_url), clock=Clock())
    assert await source.usd_prices(1, [NATIVE_TOKEN]) == {NATIVE_TOKEN: Decimal("3500")}
    assert await source.usd_prices(8453, [USDC]) == {}  # Base's USDC has another address
    assert price_requests(sim) == 2


async def test_at_most_100_tokens_per_request(session: aiohttp.ClientSession) -> None:
    scenario = parse_scenario({"generate": {"seed": 7, "chains": [1], "wallets": 1, "tokens": 250,
                                            "spenders": 1}})  # fmt: skip
    listed = [t.address for t in scenario.chains[0].tokens if t.address != NATIVE_TOKEN]
    assert len(listed) == 250
    async with run_simulator(scenario) as sim:
        client = client_for(session, sim.base_url)
        found = await SpotPriceSource(client, clock=Clock()).usd_prices(1, listed)
    assert [len(b) for b in client.batches] == [100, 100, 50]
    assert sorted(t for b in client.batches for t in b) == sorted(listed)
    assert set(found) == set(listed)


async def test_upstream_failure_never_raises_and_serves_the_last_known_prices(
    sim: RunningSimulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    source = SpotPriceSource(client_for(session, sim.base_url), ttl_s=60, clock=clock)
    assert await source.usd_prices(1, [USDC, LOCAL]) == {USDC: Decimal("1.00")}
    clock.now += 61
    sim.add_fault(Fault(endpoint="price", status=500))
    with caplog.at_level(logging.WARNING, logger="monitor.oneinch.prices"):
        found = await source.usd_prices(1, [USDC, LOCAL, UNI])
    assert found == {USDC: Decimal("1.00")}  # stale but known; UNI was never priced
    assert "unavailable" in caplog.text
    sim.clear_faults()
    # The failure was not cached: the next call asks again and gets UNI too.
    found = await source.usd_prices(1, [USDC, UNI])
    assert found == {USDC: Decimal("1.00"), UNI: Decimal("9.50")}


async def test_a_price_older_than_max_stale_is_not_served(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    source = SpotPriceSource(
        client_for(session, sim.base_url), ttl_s=60, max_stale_s=3600, clock=clock
    )
    await source.usd_prices(1, [USDC])
    sim.add_fault(Fault(endpoint="price", status=500))
    clock.now += 3600
    assert await source.usd_prices(1, [USDC]) == {USDC: Decimal("1.00")}
    clock.now += 1
    assert await source.usd_prices(1, [USDC]) == {}


async def test_a_bad_answer_is_a_failure_too(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    sim.add_fault(Fault(endpoint="price", body="not_json"))
    source = SpotPriceSource(client_for(session, sim.base_url), clock=Clock())
    assert await source.usd_prices(1, [USDC]) == {}


async def test_ttl_zero_asks_every_time(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    source = SpotPriceSource(client_for(session, sim.base_url), ttl_s=0, clock=Clock())
    await source.usd_prices(1, [USDC])
    await source.usd_prices(1, [USDC])
    assert price_requests(sim) == 2


async def test_nothing_asked_nothing_requested(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    source = SpotPriceSource(client_for(session, sim.base_url), clock=Clock())
    assert await source.usd_prices(1, []) == {}
    assert price_requests(sim) == 0


async def test_static_price_source_is_a_price_source() -> None:
    source: PriceSource = StaticPriceSource({(1, USDC.upper().replace("0X", "0x")): Decimal(1)})
    assert await source.usd_prices(1, [USDC, UNI]) == {USDC: Decimal(1)}
    assert await source.usd_prices(10, [USDC]) == {}


def test_bad_settings_are_refused(session: aiohttp.ClientSession) -> None:
    client = client_for(session, "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="batch_size"):
        SpotPriceSource(client, batch_size=101)
    with pytest.raises(ValueError, match="negative"):
        SpotPriceSource(client, ttl_s=-1)
    with pytest.raises(ValueError, match="wait_s"):
        SpotPriceSource(client, wait_s=0)


@pytest.mark.timeout(30)
async def test_a_hanging_api_is_given_up_on_after_wait_s_and_the_last_known_prices_serve(
    sim: RunningSimulator, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Each attempt would wait for the client's 5 s timeout, twice: without its own bound a
    call would hold up the recording of a poll for 10 s (minutes with the real policy)."""
    clock = Clock()
    source = SpotPriceSource(client_for(session, sim.base_url), ttl_s=60, clock=clock, wait_s=0.2)
    assert await source.usd_prices(1, [USDC]) == {USDC: Decimal("1.00")}
    clock.now += 61
    sim.add_fault(Fault(endpoint="price", delay_s=60))
    with caplog.at_level(logging.WARNING, logger="monitor.oneinch.prices"):
        found = await source.usd_prices(1, [USDC, UNI])
    assert found == {USDC: Decimal("1.00")}
    assert "no answer within 0.2s" in caplog.text
    sim.clear_faults()
    assert await source.usd_prices(1, [USDC, UNI]) == {USDC: Decimal("1.00"), UNI: Decimal("9.50")}


async def test_prices_past_the_wait_are_answered_from_the_cache_without_asking(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    client = client_for(session, sim.base_url)
    source = SpotPriceSource(client, ttl_s=60, clock=clock, batch_size=1, wait_s=0.2)
    assert await source.usd_prices(1, [USDC, UNI]) == {USDC: Decimal("1.00"), UNI: Decimal("9.50")}
    clock.now += 61
    sim.add_fault(Fault(endpoint="price", delay_s=60))
    asked = len(client.batches)
    # The first batch spends the whole wait; the second is not asked at all, and both are
    # answered with the prices known before.
    assert await source.usd_prices(1, [USDC, UNI]) == {USDC: Decimal("1.00"), UNI: Decimal("9.50")}
    assert len(client.batches) == asked + 1
