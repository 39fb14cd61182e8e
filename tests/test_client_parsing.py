"""Small parsing cases of the client, with aioresponses at the HTTP edge (no server)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import aiohttp
import pytest

from monitor.config.secrets import ApiKey
from monitor.errors import BadResponse, Rejected
from monitor.oneinch import BalanceClient, RateLimiter
from monitor.oneinch.client import RetryPolicy
from tests.aioresponses_shim import mocked_http
from tests.fakes import FakeClock, Sleeps

BASE = "https://api.example.test"
WALLET = "0x5014ef5ED72014E90B82285EA7888B4A091409Ec"
SPENDER = "0x111111125421ca6dc452d289314280a0f8842a65"
AGGREGATED = re.compile(rf"^{re.escape(BASE)}/balance/v1\.2/1/aggregatedBalancesAndAllowances/.*$")
PRICES = re.compile(rf"^{re.escape(BASE)}/price/v1\.1/1$")


def client(
    session: aiohttp.ClientSession,
    sleeps: Sleeps,
    key: str | None = None,
    limiter: RateLimiter | None = None,
) -> BalanceClient:
    return BalanceClient(
        session,
        base_url=BASE,
        api_key=ApiKey(key) if key else None,
        limiter=limiter or RateLimiter(1000),
        retry=RetryPolicy(max_attempts=3, retry_after_max_s=600),
        sleep=sleeps,
    )


async def test_wallets_are_sent_comma_separated_with_lowercase_booleans() -> None:
    sleeps = Sleeps()
    with mocked_http() as http:
        http.get(AGGREGATED, payload=[])
        async with aiohttp.ClientSession() as session:
            await client(session, sleeps).aggregated_balances_and_allowances(
                1, SPENDER, [WALLET, WALLET.lower()], filter_empty=False
            )
        ((key, _calls),) = http.requests.items()
    url = str(key[1])
    assert f"wallets={WALLET},{WALLET.lower()}" in url.replace("%2C", ",")
    assert "filterEmpty=false" in url
    assert url.count("wallets=") == 1


async def test_retry_after_as_an_http_date_is_honoured() -> None:
    sleeps = Sleeps()
    # The rate limiter waits a Retry-After out (for every request of the key), on its clock.
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock, sleep=clock.sleep)
    when = datetime.now(UTC) + timedelta(seconds=120)
    with mocked_http() as http:
        http.get(
            AGGREGATED, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)}
        )
        http.get(AGGREGATED, payload=[])
        async with aiohttp.ClientSession() as session:
            reply = await client(
                session, sleeps, limiter=limiter
            ).aggregated_balances_and_allowances(1, SPENDER, [WALLET])
    assert reply.value == ()
    assert sleeps.delays == []
    assert len(clock.sleeps) == 1
    assert 110 <= clock.sleeps[0] <= 120


async def test_message_shaped_error_body_is_quoted_and_the_key_is_scrubbed() -> None:
    sleeps = Sleeps()
    body = {
        "statusCode": 400,
        "message": "invalid key sk-canary-789 for wallets",
        "error": "Bad Request",
    }
    with mocked_http() as http:
        http.get(AGGREGATED, status=400, payload=body, headers={"X-Request-Id": "req-42"})
        async with aiohttp.ClientSession() as session:
            with pytest.raises(Rejected) as info:
                await client(
                    session, sleeps, key="sk-canary-789"
                ).aggregated_balances_and_allowances(1, SPENDER, [WALLET])
    message = str(info.value)
    assert "invalid key *** for wallets" in message
    assert "sk-canary-789" not in message
    assert "X-Request-Id req-42" in message
    assert sleeps.delays == []


async def test_bearer_header_carries_the_key_and_no_query_parameter_does() -> None:
    sleeps = Sleeps()
    with mocked_http() as http:
        http.get(AGGREGATED, payload=[])
        async with aiohttp.ClientSession() as session:
            await client(session, sleeps, key="sk-canary-1").aggregated_balances_and_allowances(
                1, SPENDER, [WALLET]
            )
        (((_, url), (call,)),) = http.requests.items()
    assert call.kwargs["headers"]["Authorization"] == "Bearer sk-canary-1"
    assert "sk-canary-1" not in str(url)


async def test_aggregated_answers_key_wallets_by_the_strings_asked_for() -> None:
    sleeps = Sleeps()
    asked = "".join(list(WALLET.lower()))  # a string of its own, as the config's is
    spellings = [WALLET, "0x" + WALLET[2:].upper()]
    answer = [
        {
            "address": address,
            "symbol": "X",
            "decimals": 18,
            "wallets": {spelled: {"balance": "1", "allowance": "2"}},
        }
        for address, spelled in zip(
            [
                "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
                "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
            ],
            spellings,
            strict=True,
        )
    ]
    with mocked_http() as http:
        http.get(AGGREGATED, payload=answer)
        async with aiohttp.ClientSession() as session:
            reply = await client(session, sleeps).aggregated_balances_and_allowances(
                1, SPENDER, [asked]
            )
    assert [list(entry.wallets) for entry in reply.value] == [[asked], [asked]]
    assert all(key is asked for entry in reply.value for key in entry.wallets)


async def test_a_body_nested_too_deep_is_a_bad_response_not_a_crash() -> None:
    # json.loads raised RecursionError here, which no caller handled: the poll failed whole.
    sleeps = Sleeps()
    with mocked_http() as http:
        http.get(AGGREGATED, body=b"[" * 5_000 + b"]" * 5_000)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(BadResponse, match=r"body is not JSON \(10000 bytes"):
                await client(session, sleeps).aggregated_balances_and_allowances(
                    1, SPENDER, [WALLET]
                )
    assert sleeps.delays == []


async def test_an_amount_sent_as_a_huge_json_number_is_refused_naming_it_exactly() -> None:
    sleeps = Sleeps()
    answer = (
        '[{"address": "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "decimals": 18, '
        f'"wallets": {{"{WALLET}": {{"balance": "1", "allowance": {2**80}}}}}}}]'
    )
    with mocked_http() as http:
        http.get(AGGREGATED, body=answer.encode())
        async with aiohttp.ClientSession() as session:
            with pytest.raises(BadResponse) as info:
                await client(session, sleeps).aggregated_balances_and_allowances(
                    1, SPENDER, [WALLET]
                )
    assert f"allowance: amount must be a string of decimal digits, got {2**80} (" in str(info.value)


async def test_a_price_sent_as_a_huge_json_integer_is_exact() -> None:
    sleeps = Sleeps()
    wei = 10**30 + 7
    with mocked_http() as http:
        http.get(PRICES, body=f'{{"0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": {wei}}}'.encode())
        async with aiohttp.ClientSession() as session:
            reply = await client(session, sleeps).whitelisted_prices(1)
    assert reply.value == {"0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee": Decimal(wei)}
