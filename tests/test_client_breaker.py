"""Issue 11, item 6: a host that refuses connections (or has no address) opens the client's
breaker, so requests to it fail at once with an error naming the host, never the key; after
a cool-down the breaker lets a request through again, and the first answer closes it."""

from __future__ import annotations

import logging
import socket
from dataclasses import replace

import aiohttp
import pytest

from monitor.config import Config, parse_config
from monitor.config.secrets import ApiKey
from monitor.errors import HostUnreachable, Unavailable
from monitor.oneinch import BalanceClient, RateLimiter, RequestRecord
from monitor.oneinch.breaker import HostBreaker, origin_of
from monitor.oneinch.client import RetryPolicy
from monitor.poller import poll_once
from monitor.simulator.server import run_simulator
from tests.fakes import FakeClock, Sleeps
from tests.simulator_helpers import WALLET_A, small

KEY = "sk-canary-breaker-0123456789"


def refusing_client(
    session: aiohttp.ClientSession,
    port: int,
    *,
    records: list[RequestRecord],
    sleeps: Sleeps,
    breaker: HostBreaker | None = None,
) -> BalanceClient:
    return BalanceClient(
        session,
        base_url=f"http://127.0.0.1:{port}/",
        api_key=ApiKey(KEY),
        limiter=RateLimiter(1000),
        retry=RetryPolicy(max_attempts=5, backoff_initial_s=1.0),
        on_request=records.append,
        sleep=sleeps,
        breaker=breaker,
    )


async def test_a_refusing_host_opens_the_breaker_and_later_requests_fail_at_once(
    http_session: aiohttp.ClientSession, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    records: list[RequestRecord] = []
    sleeps = Sleeps()
    client = refusing_client(http_session, unused_tcp_port, records=records, sleeps=sleeps)
    origin = f"http://127.0.0.1:{unused_tcp_port}"
    with caplog.at_level(logging.DEBUG), pytest.raises(HostUnreachable) as first:
        await client.currencies(1)
    # three refusals in a row open it: the third attempt gives up, not the fifth
    assert first.value.attempts == 3
    assert len(records) == 3 and len(sleeps.delays) == 2
    with pytest.raises(HostUnreachable) as later:
        await client.aggregated_balances_and_allowances(1, "0x" + "5e" * 20, ["0x" + "a1" * 20])
    assert len(records) == 3  # no connection tried
    assert len(sleeps.delays) == 2  # no retry, no backoff
    for error in (first.value, later.value):
        assert isinstance(error, Unavailable)
        assert error.reason == "unavailable"
        assert error.origin == origin
        assert f"connection failed to {origin}: connection refused" in str(error)
        assert KEY not in str(error)
    assert KEY not in caplog.text


async def test_a_name_that_does_not_resolve_names_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoSuchName(aiohttp.abc.AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[aiohttp.abc.ResolveResult]:
            raise OSError(socket.EAI_NONAME, "Name or service not known")

        async def close(self) -> None:
            return None

    sleeps = Sleeps()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=NoSuchName())) as s:
        client = BalanceClient(
            s,
            base_url=f"https://api.example.invalid/prefix/{KEY}",
            api_key=ApiKey(KEY),
            limiter=RateLimiter(1000),
            sleep=sleeps,
        )
        with caplog.at_level(logging.DEBUG), pytest.raises(HostUnreachable) as info:
            await client.currencies(1)
        with pytest.raises(HostUnreachable):
            await client.currencies(1)
    message = str(info.value)
    assert "connection failed to https://api.example.invalid:443: name not resolved" in message
    assert KEY not in message and "prefix" not in message
    assert KEY not in caplog.text
    assert len(sleeps.delays) == 2


async def test_the_breaker_lets_a_request_through_after_its_cool_down(
    http_session: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    """The daemon keeps its client: once the host is back, a later poll must succeed."""
    clock = FakeClock()
    breaker = HostBreaker(origin_of(f"http://127.0.0.1:{unused_tcp_port}"), clock=clock)
    records: list[RequestRecord] = []
    client = refusing_client(
        http_session, unused_tcp_port, records=records, sleeps=Sleeps(), breaker=breaker
    )
    config = _config(unused_tcp_port)
    first = await poll_once(client, config)
    assert not first.ok and all(b.error_reason == "unavailable" for b in first.batches)
    tried = len(records)
    clock.now += breaker.cool_down_s - 1
    assert not (await poll_once(client, config)).ok
    assert len(records) == tried  # still cooling down: nothing sent
    clock.now += 2
    # half-open, host still down: one attempt, and the breaker is open again at once
    assert not (await poll_once(client, config)).ok
    assert len(records) == tried + 1
    clock.now += breaker.cool_down_s + 1
    async with run_simulator(small(), port=unused_tcp_port):
        result = await poll_once(client, config)
        assert result.ok
        assert breaker.failures == 0
        assert result.positions


async def test_a_dead_host_fails_the_poll_fast_with_one_line_per_host(
    http_session: aiohttp.ClientSession, unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    records: list[RequestRecord] = []
    client = refusing_client(http_session, unused_tcp_port, records=records, sleeps=Sleeps())
    config = _config(unused_tcp_port, wallets=12)
    with caplog.at_level(logging.WARNING):
        result = await poll_once(client, config)
    assert len(result.batches) == 12 and not result.ok
    assert all(f"127.0.0.1:{unused_tcp_port}" in (b.error or "") for b in result.batches)
    # 12 batches of 5 attempts would be 60 connections; the breaker stops them at 3 (plus
    # what was already under way in the 4 concurrent batches)
    assert len(records) <= 3 + 4
    poller_lines = [r.getMessage() for r in caplog.records if r.name == "monitor.poller"]
    assert len(poller_lines) <= 3, poller_lines
    assert any(
        f"http://127.0.0.1:{unused_tcp_port} unreachable (connection refused" in line
        for line in poller_lines
    )
    assert KEY not in caplog.text


def test_the_breaker_rule() -> None:
    clock = FakeClock()
    breaker = HostBreaker("http://h:1", open_after=3, cool_down_s=10, clock=clock)
    breaker.failed("connection refused")
    breaker.failed("connection refused")
    breaker.answered()  # any answer clears the count
    breaker.failed("connection refused")
    breaker.failed("connection refused")
    assert not breaker.is_open()
    breaker.failed("connection refused")
    assert breaker.is_open() and breaker.opened.is_set()
    clock.now += 10
    assert not breaker.is_open() and not breaker.opened.is_set()  # half-open
    breaker.failed("connection refused")
    assert breaker.is_open()  # one failure re-opens it
    breaker.answered()
    assert not breaker.is_open() and breaker.failures == 0
    with pytest.raises(ValueError, match="open_after"):
        HostBreaker("http://h:1", open_after=0)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://api.1inch.dev", "https://api.1inch.dev:443"),
        ("http://127.0.0.1:8900/", "http://127.0.0.1:8900"),
        ("http://[::1]:8900/x?key=secret", "http://[::1]:8900"),
        ("https://u:p@h.example/path", "https://h.example:443"),
    ],
)
def test_origin_is_scheme_host_and_port_only(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def _config(port: int, *, wallets: int = 0) -> Config:
    """The small scenario's config for ``port``, one aggregated request per wallet and no
    custom tokens; ``wallets`` replaces its two wallets by that many empty ones (0: wallet A
    alone, so a poll is one request)."""
    scenario = small(wallets=[{"address": WALLET_A, "label": "a"}])
    if wallets:
        made = [{"address": "0x" + f"{i + 1:02x}" * 20} for i in range(wallets)]
        scenario = small(wallets=made, balances=[], allowances=[])
    config = parse_config(scenario.monitor_config(f"http://127.0.0.1:{port}"))
    chains = tuple(replace(c, custom_tokens=()) for c in config.chains)
    return replace(config, chains=chains, api=replace(config.api, max_wallets_per_request=1))
