"""The Balance API client over real HTTP against the simulator: endpoints, retries, limits."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import aiohttp
import pytest

from monitor.config import parse_config
from monitor.config.secrets import ApiKey
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX
from monitor.errors import BadResponse, RateLimited, Rejected, Unavailable
from monitor.oneinch import BalanceClient, RateLimiter, RequestRecord
from monitor.oneinch.client import RETRY_AFTER_CEILING_S, RetryPolicy, _retry_after_s
from monitor.poller import poll_once
from monitor.simulator.faults import Fault
from monitor.simulator.scenario import parse_scenario
from monitor.simulator.server import RunningSimulator, run_simulator
from tests.fakes import FakeClock, Sleeps, max_in_window
from tests.simulator_helpers import small

TREASURY = "0x5014ef5ed72014e90b82285ea7888b4a091409ec"
OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
COLD = "0x02487d261e10ae9fc6c76e86bb80b0fac04676c4"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
PERMIT2 = "0x000000000022d473030f116ddee9f6b43ac78ba3"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
UNI = "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
LOCAL = "0x4a6f0e7d3c5b2a1908f7e6d5c4b3a29180706050"

Factory = Callable[..., BalanceClient]


# -- every endpoint -----------------------------------------------------------------------------


async def test_aggregated_returns_typed_tokens_with_exact_amounts(make_client: Factory) -> None:
    reply = await make_client().aggregated_balances_and_allowances(1, ROUTER, [TREASURY, OPS])
    by_token = {t.token.address: t for t in reply.value}
    assert reply.request_id
    usdc = by_token[USDC]
    assert usdc.token.symbol == "USDC"
    assert usdc.token.decimals == 6
    assert usdc.wallets[TREASURY].allowance == UINT256_MAX
    assert usdc.wallets[TREASURY].balance == 250_000 * 10**6
    assert by_token[UNI].wallets[TREASURY].allowance == 2**96 - 1
    native = by_token[NATIVE_TOKEN]
    assert native.token.is_native
    assert native.wallets[TREASURY].allowance == UINT256_MAX
    assert LOCAL not in by_token  # custom tokens are not on 1inch's list


async def test_aggregated_accepts_checksummed_wallets_in_the_request(make_client: Factory) -> None:
    reply = await make_client().aggregated_balances_and_allowances(
        1,
        "0x000000000022D473030F116dDEE9F6B43aC78BA3",
        ["0x5014ef5ED72014E90B82285EA7888B4A091409Ec"],
    )
    weth = next(t for t in reply.value if t.token.address == WETH)
    assert weth.wallets[TREASURY].allowance == 2**160 - 1


async def test_balances_endpoints(make_client: Factory) -> None:
    client = make_client()
    listed = (await client.balances(1, TREASURY)).value
    assert listed[USDC] == 250_000 * 10**6
    assert LOCAL not in listed
    custom = (await client.custom_balances(1, TREASURY, [LOCAL, USDC])).value
    assert custom[USDC] == 250_000 * 10**6
    assert LOCAL in custom
    multiple = (await client.balances_of_wallets(1, [TREASURY, OPS], [USDT])).value
    assert multiple[OPS][USDT] == 12_000 * 10**6
    assert multiple[TREASURY][USDT] == 0


async def test_allowance_endpoints(make_client: Factory) -> None:
    client = make_client()
    both = (await client.allowances_and_balances(1, ROUTER, TREASURY)).value
    assert both[USDC].allowance == UINT256_MAX
    assert both[USDC].balance == 250_000 * 10**6
    custom_both = (await client.custom_allowances_and_balances(1, ROUTER, TREASURY, [LOCAL])).value
    assert custom_both[LOCAL].allowance > 0
    allowances = (await client.allowances(1, PERMIT2, TREASURY)).value
    assert allowances[WETH] == 2**160 - 1
    custom_allowances = (await client.custom_allowances(1, ROUTER, TREASURY, [LOCAL, USDT])).value
    assert custom_allowances[USDT] == 0
    assert custom_allowances[LOCAL] == custom_both[LOCAL].allowance


async def test_price_endpoints(make_client: Factory) -> None:
    client = make_client()
    whitelist = (await client.whitelisted_prices(1)).value
    assert whitelist[NATIVE_TOKEN] == Decimal(10**18)
    assert whitelist[WETH] == Decimal(10**18)
    usd = (await client.whitelisted_prices(1, currency="USD")).value
    assert usd[USDC] == Decimal("1")
    posted = (await client.prices(1, [USDC, LOCAL], currency="USD")).value
    assert posted == {USDC: Decimal("1")}  # LOCAL has no price: absent, never zero
    by_address = (await client.prices_by_address(1, [UNI, USDC])).value
    assert by_address[UNI] == Decimal(10**18) * Decimal("9.5") / Decimal(3500) // 1
    codes = (await client.currencies(1)).value
    assert "USD" in codes


# -- auth -----------------------------------------------------------------------------------------


async def test_bearer_key_is_sent_and_a_wrong_one_is_rejected_without_retry(
    http_session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = parse_scenario(
        {
            "api_key": "right-key",
            "chains": [{"id": 1, "tokens": []}],
            "wallets": [{"address": TREASURY}],
        }
    )
    async with run_simulator(scenario) as sim:

        def client(key: str) -> BalanceClient:
            return BalanceClient(
                http_session, base_url=sim.base_url, api_key=ApiKey(key), limiter=RateLimiter(1000)
            )

        await client("right-key").currencies(1)
        with caplog.at_level(logging.DEBUG), pytest.raises(Rejected) as info:
            await client("sk-canary-wrong").currencies(1)
    assert info.value.status == 401
    assert info.value.attempts == 1
    assert info.value.request_id
    assert "sk-canary-wrong" not in str(info.value)
    assert "sk-canary-wrong" not in caplog.text
    assert info.value.request_id in caplog.text  # X-Request-Id logged with the failure
    assert [r.status for r in sim.requests] == [200, 401]


# -- retries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retried_with_growing_backoff_then_succeeds(
    make_client: Factory, simulator: RunningSimulator, status: int
) -> None:
    simulator.add_fault(Fault(endpoint="aggregated", status=status, count=2))
    sleeps = Sleeps()
    retry = RetryPolicy(max_attempts=4, backoff_initial_s=1.0, backoff_max_s=10.0)
    reply = await make_client(sleep=sleeps, retry=retry).aggregated_balances_and_allowances(
        1, ROUTER, [TREASURY]
    )
    assert reply.value
    assert [r.status for r in simulator.requests] == [status, status, 200]
    assert len(sleeps.delays) == 2
    assert 0.5 <= sleeps.delays[0] <= 1.0  # half fixed, half jitter
    assert 1.0 <= sleeps.delays[1] <= 2.0


async def test_429_without_retry_after_backs_off_and_gives_up_after_max_attempts(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="aggregated", status=429))
    sleeps = Sleeps()
    retry = RetryPolicy(max_attempts=3, backoff_initial_s=2.0, backoff_max_s=3.0)
    with pytest.raises(RateLimited) as info:
        await make_client(sleep=sleeps, retry=retry).aggregated_balances_and_allowances(
            1, ROUTER, [TREASURY]
        )
    assert info.value.attempts == 3
    assert info.value.status == 429
    assert len(simulator.requests) == 3
    assert len(sleeps.delays) == 2
    assert sleeps.delays[1] <= 3.0  # capped by backoff_max_s


async def test_429_with_retry_after_waits_exactly_that_long(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="balances", status=429, retry_after_s=7, count=1))
    sleeps = Sleeps()
    # The wait is the rate limiter's (it holds every request of the key), on its clock.
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep)
    reply = await make_client(sleep=sleeps, limiter=limiter).balances(1, TREASURY)
    assert reply.value[USDC] > 0
    assert clock.sleeps == [7.0]
    assert sleeps.delays == []


async def test_retry_after_beyond_the_cap_gives_up_at_once(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="balances", status=429, retry_after_s=3600, count=1))
    sleeps = Sleeps()
    retry = RetryPolicy(max_attempts=5, retry_after_max_s=60)
    with pytest.raises(RateLimited, match="exceeds retry_after_max_s"):
        await make_client(sleep=sleeps, retry=retry).balances(1, TREASURY)
    assert sleeps.delays == []
    assert len(simulator.requests) == 1


async def test_after_a_retry_after_beyond_the_cap_other_requests_fail_without_sending(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="balances", status=429, retry_after_s=3600, count=1))
    sleeps = Sleeps()
    client = make_client(sleep=sleeps, retry=RetryPolicy(max_attempts=5, retry_after_max_s=60))
    with pytest.raises(RateLimited, match="exceeds retry_after_max_s"):
        await client.balances(1, TREASURY)
    with pytest.raises(RateLimited, match=r"paused by a Retry-After for another 3\d{3}s") as info:
        await client.currencies(1)
    assert "retry_after_max_s 60s" in str(info.value)
    assert simulator.base_url.removeprefix("http://") in str(info.value)
    assert len(simulator.requests) == 1  # the key is refused for an hour: nothing more sent
    assert sleeps.delays == []


async def test_an_absurd_retry_after_holds_the_key_for_a_day_at_most(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="balances", status=429, retry_after_s=10**12, count=1))
    limiter = RateLimiter(1000)
    client = make_client(limiter=limiter, retry=RetryPolicy(max_attempts=2, retry_after_max_s=60))
    with pytest.raises(RateLimited, match="exceeds retry_after_max_s"):
        await client.balances(1, TREASURY)
    assert 0 < limiter.paused_s() <= RETRY_AFTER_CEILING_S


def test_a_retry_after_too_long_to_be_a_number_is_no_retry_after() -> None:
    assert _retry_after_s("9" * 400) is None  # float() of it is inf
    assert _retry_after_s(" 120 ") == 120.0


async def test_timeout_is_retried_then_reported_as_unavailable(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="any", delay_s=2.0))
    records: list[RequestRecord] = []
    client = make_client(
        timeout_s=0.2,
        retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.0, backoff_max_s=0.0),
        on_request=records.append,
    )
    with pytest.raises(Unavailable, match=r"no answer within 0\.2s") as info:
        await client.currencies(1)
    assert info.value.attempts == 2
    assert [r.code for r in records] == ["timeout", "timeout"]


async def test_connection_refused_is_retried_then_unavailable(
    http_session: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    sleeps = Sleeps()
    client = BalanceClient(
        http_session,
        base_url=f"http://127.0.0.1:{unused_tcp_port}",
        api_key=None,
        limiter=RateLimiter(1000),
        retry=RetryPolicy(max_attempts=3, backoff_initial_s=0.01),
        sleep=sleeps,
    )
    with pytest.raises(Unavailable, match="connection failed") as info:
        await client.currencies(1)
    assert info.value.attempts == 3
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_never_retried(
    make_client: Factory, simulator: RunningSimulator, status: int
) -> None:
    simulator.add_fault(Fault(endpoint="aggregated", status=status, count=1))
    sleeps = Sleeps()
    with pytest.raises(Rejected) as info:
        await make_client(sleep=sleeps).aggregated_balances_and_allowances(1, ROUTER, [TREASURY])
    assert info.value.status == status
    assert sleeps.delays == []
    assert len(simulator.requests) == 1


async def test_a_real_400_carries_the_upstream_description(make_client: Factory) -> None:
    with pytest.raises(Rejected, match="HTTP 400") as info:
        await make_client().aggregated_balances_and_allowances(1, ROUTER, ["0xnot-an-address"])
    assert info.value.problem.startswith("request refused: ")
    assert len(info.value.problem) > len("request refused: ")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("not_json", "not JSON"),
        ("truncated", "not JSON"),
        ("non_numeric_amount", "amount"),
    ],
)
async def test_bad_2xx_bodies_are_bad_responses_not_retried(
    make_client: Factory, simulator: RunningSimulator, body: str, match: str
) -> None:
    simulator.add_fault(Fault(endpoint="aggregated", body=body, count=1))
    with pytest.raises(BadResponse, match=match) as info:
        await make_client().aggregated_balances_and_allowances(1, ROUTER, [TREASURY])
    assert info.value.request_id
    assert len(simulator.requests) == 1


async def test_html_error_page_from_a_proxy_is_retried_as_unavailable(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="aggregated", body="html", count=1))
    reply = await make_client().aggregated_balances_and_allowances(1, ROUTER, [TREASURY])
    assert reply.value
    assert [r.status for r in simulator.requests] == [502, 200]


async def test_missing_and_extra_fields_are_tolerated(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="aggregated", body="missing_fields", count=1))
    simulator.add_fault(Fault(endpoint="aggregated", body="extra_fields", count=1))
    client = make_client()
    first = await client.aggregated_balances_and_allowances(1, ROUTER, [TREASURY, OPS])
    second = await client.aggregated_balances_and_allowances(1, ROUTER, [TREASURY, OPS])
    assert first.value and second.value


async def test_every_attempt_is_reported_for_metrics(
    make_client: Factory, simulator: RunningSimulator
) -> None:
    simulator.add_fault(Fault(endpoint="aggregated", status=503, count=1))
    records: list[RequestRecord] = []
    await make_client(on_request=records.append).aggregated_balances_and_allowances(
        1, ROUTER, [TREASURY]
    )
    assert [(r.endpoint, r.code, r.attempt) for r in records] == [
        ("aggregated", "503", 1),
        ("aggregated", "200", 2),
    ]
    assert all(r.request_id for r in records)


# -- the rate limiter over real HTTP ---------------------------------------------------------------


async def test_request_rate_is_never_exceeded_retries_included(
    http_session: aiohttp.ClientSession,
) -> None:
    rate = 8
    scenario = parse_scenario(
        {
            "requests_per_second": rate,
            "chains": [{"id": 1, "tokens": []}],
            "wallets": [{"address": TREASURY}],
        }
    )
    async with run_simulator(scenario) as sim:
        sim.add_fault(Fault(endpoint="any", status=503, count=6))
        client = BalanceClient(
            http_session,
            base_url=sim.base_url,
            api_key=None,
            limiter=RateLimiter(rate),
            retry=RetryPolicy(max_attempts=5, backoff_initial_s=0.0, backoff_max_s=0.0),
        )
        started = time.monotonic()
        await asyncio.gather(*(client.currencies(1) for _ in range(14)))
        elapsed = time.monotonic() - started
    arrivals = [r.received_at for r in sim.requests]
    assert len(arrivals) == 20  # 14 requests + 6 retries
    assert [r.status for r in sim.requests].count(429) == 0  # the server's own limit never hit
    assert max_in_window(arrivals) <= rate
    assert elapsed >= (20 - 1) / rate * 0.99


async def test_a_retry_after_pauses_every_concurrent_batch_of_the_key() -> None:
    """Issue 11: the next request went out 0.5 s after a ``Retry-After: 2``. The limit is the
    key's: with 4 batches in flight, none may start until the Retry-After has passed."""
    scenario = small()
    starts: list[float] = []
    received_429: list[float] = []

    async def on_request_start(*_: object) -> None:
        starts.append(time.monotonic())

    def on_request(record: RequestRecord) -> None:
        if record.code == "429":
            received_429.append(time.monotonic())

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(on_request_start)
    async with (
        run_simulator(scenario) as sim,
        aiohttp.ClientSession(trace_configs=[tracing]) as session,
    ):
        sim.add_fault(Fault(endpoint="any", status=429, retry_after_s=2, count=1))
        config = parse_config(scenario.monitor_config(sim.base_url))
        config = replace(config, api=replace(config.api, max_wallets_per_request=1))
        client = BalanceClient(
            session,
            base_url=sim.base_url,
            api_key=None,
            limiter=RateLimiter(2),
            on_request=on_request,
        )
        result = await poll_once(client, config, max_concurrent_requests=4)
    assert result.ok
    assert len(result.batches) == 4
    (got_429,) = received_429
    later = [s for s in starts if s > got_429]
    assert len(later) == 4  # the retry and the three other batches, all held
    assert min(later) >= got_429 + 2.0
    # and as the server saw them: nothing arrived in the 2 s after the 429's request
    arrivals = sorted(r.received_at for r in sim.requests)
    assert [r.status for r in sim.requests].count(429) == 1
    refused_at = next(r.received_at for r in sim.requests if r.status == 429)
    assert all(a == refused_at or a >= refused_at + 2.0 for a in arrivals)
