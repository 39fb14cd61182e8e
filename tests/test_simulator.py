"""The simulated 1inch API over real HTTP: every endpoint, the knobs, auth and the rate limit."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from monitor.domain.addresses import to_checksum
from monitor.simulator.scenario import load_scenario
from monitor.simulator.server import RunningSimulator
from tests.simulator_helpers import (
    BASE_USDC,
    COLD,
    CUSTOM,
    DAI,
    FURUCOMBO,
    LOCAL,
    MAX,
    NATIVE,
    OPS,
    PERMIT2,
    ROUTER,
    SPENDER,
    TOKEN,
    TREASURY,
    UINT96_MAX,
    UINT160_MAX,
    UNI,
    UNKNOWN_SPENDER,
    USDC,
    USDT,
    WALLET_A,
    WALLET_B,
    WETH,
    FakeClock,
    aggregated_url,
    fetch,
    poll,
    position,
    serving,
    small,
)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
async def default_sim() -> AsyncIterator[tuple[RunningSimulator, aiohttp.ClientSession]]:
    async with serving(load_scenario(None)) as pair:
        yield pair


# --- endpoint 1 ------------------------------------------------------------------------------


async def test_aggregated_reports_the_default_scenarios_positions(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    tokens = await poll(session, ROUTER, [TREASURY, OPS, COLD])
    assert position(tokens, USDC, TREASURY) == {"balance": "250000000000", "allowance": MAX}
    assert position(tokens, UNI, TREASURY) == {
        "balance": "10000" + "0" * 18,
        "allowance": UINT96_MAX,
    }
    assert position(tokens, DAI, TREASURY) == {
        "balance": "50000" + "0" * 18,
        "allowance": "1000" + "0" * 18,
    }
    assert position(tokens, WETH, OPS) == {"balance": "0", "allowance": MAX}
    assert position(tokens, NATIVE, COLD) == {"balance": "500" + "0" * 18, "allowance": MAX}
    assert LOCAL not in {t["address"] for t in tokens}, "custom tokens are POST-only"
    permit2 = await poll(session, PERMIT2, [TREASURY])
    assert position(permit2, WETH, TREASURY) == {
        "balance": "40" + "0" * 18,
        "allowance": UINT160_MAX,
    }
    furucombo = await poll(session, FURUCOMBO, [OPS])
    assert position(furucombo, USDC, OPS) == {"balance": "3000000000", "allowance": MAX}
    unknown = await poll(session, UNKNOWN_SPENDER, [OPS])
    assert position(unknown, USDT, OPS) == {"balance": "12000000000", "allowance": "5000000000"}
    base = await poll(session, ROUTER, [TREASURY], chain=8453)
    assert position(base, BASE_USDC, TREASURY) == {"balance": "80000000000", "allowance": MAX}


async def test_aggregated_token_objects_have_the_documented_fields(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    tokens = await poll(session, ROUTER, [TREASURY])
    by_address = {t["address"]: t for t in tokens}
    native = by_address[NATIVE]
    assert native["type"] == "ethereum"
    assert "native" in native["tags"]
    assert native["symbol"] == "ETH" and native["decimals"] == 18
    usdc = by_address[USDC]
    assert usdc == usdc | {
        "symbol": "USDC",
        "decimals": 6,
        "isCustom": False,
        "type": "token",
        "tracked": True,
        "logoURI": f"https://tokens.1inch.io/{USDC}.png",
    }
    assert all(t["address"] == t["address"].lower() for t in tokens)
    assert tokens[0]["address"] == NATIVE, "the native coin comes first"


async def test_native_pseudo_allowance_is_max_for_every_spender() -> None:
    async with serving(small()) as (_, session):
        for spender in (SPENDER, ROUTER):
            tokens = await poll(session, spender, [WALLET_A, WALLET_B], filter_empty="false")
            assert position(tokens, NATIVE, WALLET_A) == {"balance": "0", "allowance": MAX}
            assert position(tokens, NATIVE, WALLET_B) == {"balance": "0", "allowance": MAX}


async def test_without_filter_empty_every_token_and_wallet_is_listed() -> None:
    async with serving(small()) as (_, session):
        for flag in (None, "false"):
            tokens = await poll(session, SPENDER, [WALLET_A, WALLET_B], filter_empty=flag)
            assert [t["address"] for t in tokens] == [NATIVE, TOKEN]
            assert all(len(t["wallets"]) == 2 for t in tokens)


async def test_filter_empty_token_mode_drops_tokens_empty_for_every_wallet() -> None:
    async with serving(small()) as (_, session):
        tokens = await poll(session, SPENDER, [WALLET_A, WALLET_B])
        assert [t["address"] for t in tokens] == [TOKEN], "native: balance 0, allowance ignored"
        assert position(tokens, TOKEN, WALLET_B) == {"balance": "0", "allowance": "0"}
        assert await poll(session, SPENDER, [WALLET_B]) == []


async def test_filter_empty_wallet_mode_drops_empty_wallet_entries() -> None:
    async with serving(small(behaviour={"filter_empty": "wallet"})) as (_, session):
        tokens = await poll(session, SPENDER, [WALLET_A, WALLET_B])
        assert [t["address"] for t in tokens] == [TOKEN]
        assert position(tokens, TOKEN, WALLET_A) == {"balance": "100", "allowance": "50"}
        assert position(tokens, TOKEN, WALLET_B) is None
        assert await poll(session, SPENDER, [WALLET_B]) == []


async def test_allowance_without_balance_is_not_empty() -> None:
    scenario = small(
        balances=[],
        allowances=[
            {"chain": 1, "wallet": WALLET_B, "token": TOKEN, "spender": SPENDER, "amount": "max"}
        ],
    )
    async with serving(scenario) as (_, session):
        tokens = await poll(session, SPENDER, [WALLET_B])
        assert position(tokens, TOKEN, WALLET_B) == {"balance": "0", "allowance": MAX}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("checksum", to_checksum(WALLET_A)),
        ("lower", "0x" + "a1" * 20),
        ("echo", "0x" + "A1" * 20),
    ],
)
async def test_wallet_key_case_knob(case: str, expected: str) -> None:
    async with serving(small(behaviour={"wallet_key_case": case})) as (_, session):
        tokens = await poll(session, SPENDER, ["0x" + "A1" * 20])
        assert list(tokens[0]["wallets"]) == [expected]


async def test_wallet_addresses_compare_case_insensitively() -> None:
    async with serving(small()) as (_, session):
        tokens = await poll(session, SPENDER.upper().replace("0X", "0x"), ["0x" + "A1" * 20])
        assert position(tokens, TOKEN, WALLET_A) == {"balance": "100", "allowance": "50"}


async def test_repeated_wallets_keys_are_rejected_by_default() -> None:
    url = f"balance/v1.2/1/aggregatedBalancesAndAllowances/{SPENDER}?wallets={WALLET_A}&wallets={WALLET_B}"
    async with serving(small()) as (_, session):
        status, body, _ = await fetch(session, "GET", url)
        assert status == 400
        assert "comma-separated" in body["description"]


async def test_repeated_wallets_keys_are_merged_when_accepted() -> None:
    url = f"balance/v1.2/1/aggregatedBalancesAndAllowances/{SPENDER}?wallets={WALLET_A}&wallets={WALLET_B}"
    async with serving(small(behaviour={"repeated_wallets": "accept"})) as (_, session):
        status, body, _ = await fetch(session, "GET", url)
        assert status == 200
        assert len(body[0]["wallets"]) == 2


async def test_max_wallets_per_request_knob() -> None:
    async with serving(small(behaviour={"max_wallets_per_request": 1})) as (_, session):
        status, body, _ = await fetch(
            session, "GET", aggregated_url(1, SPENDER, [WALLET_A, WALLET_B], "true")
        )
        assert status == 400
        assert "at most 1" in body["description"]
        assert await poll(session, SPENDER, [WALLET_A])


@pytest.mark.parametrize(
    "url",
    [
        aggregated_url(1, SPENDER, [WALLET_A, "0xbad"], "true"),
        aggregated_url(1, "0xnot-a-spender", [WALLET_A], "true"),
        aggregated_url(1, SPENDER, [WALLET_A], "True"),
        aggregated_url(1, SPENDER, [WALLET_A], "1"),
        aggregated_url(1, SPENDER, [WALLET_A, ""], None),
        aggregated_url(5, SPENDER, [WALLET_A], "true"),
        aggregated_url(501, SPENDER, [WALLET_A], "true"),
        f"balance/v1.2/eth/aggregatedBalancesAndAllowances/{SPENDER}?wallets={WALLET_A}",
        f"balance/v1.2/1/aggregatedBalancesAndAllowances/{SPENDER}",
        f"balance/v1.2/1/aggregatedBalancesAndAllowances/{SPENDER}?wallets={WALLET_A}"
        "&filterEmpty=true&filterEmpty=false",
    ],
)
async def test_aggregated_rejects_invalid_requests(url: str) -> None:
    async with serving(small()) as (simulator, session):
        status, body, _ = await fetch(session, "GET", url)
        assert status == 400
        assert body["statusCode"] == 400 and body["error"] == "Bad Request"
        assert simulator.requests[-1].status == 400


async def test_invalid_address_error_names_it_in_meta() -> None:
    async with serving(small()) as (_, session):
        _, body, _ = await fetch(
            session, "GET", aggregated_url(1, SPENDER, [WALLET_A, "0xbad"], "true")
        )
        assert body["meta"] == [{"type": "address", "value": "0xbad"}]


async def test_supported_chain_unknown_to_the_scenario_is_an_empty_chain() -> None:
    async with serving(small()) as (_, session):
        assert await poll(session, SPENDER, [WALLET_A], chain=137, filter_empty="false") == []
        status, body, _ = await fetch(session, "GET", f"balance/v1.2/137/balances/{WALLET_A}")
        assert (status, body) == (200, {})


# --- endpoints 2 to 8 ------------------------------------------------------------------------


async def test_balances_get_lists_every_listed_token_including_zeros(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    status, body, _ = await fetch(session, "GET", f"balance/v1.2/1/balances/{OPS}")
    assert status == 200
    assert body == {
        NATIVE: "2500000000000000000",
        USDC: "3000000000",
        USDT: "12000000000",
        WETH: "0",
        UNI: "0",
        DAI: "1500" + "0" * 18,
    }


async def test_custom_balances_post_answers_asked_tokens_plus_native() -> None:
    unknown = "0x" + "99" * 20
    async with serving(small()) as (_, session):
        status, body, _ = await fetch(
            session,
            "POST",
            f"balance/v1.2/1/balances/{WALLET_A}",
            json_body={"tokens": [TOKEN, unknown.upper().replace("0X", "0x")]},
        )
        assert status == 200
        assert body == {TOKEN: "100", unknown: "0", NATIVE: "0"}


async def test_native_in_custom_knob_off_leaves_native_out() -> None:
    async with serving(small(behaviour={"native_in_custom": False})) as (_, session):
        _, body, _ = await fetch(
            session, "POST", f"balance/v1.2/1/balances/{WALLET_A}", json_body={"tokens": [TOKEN]}
        )
        assert body == {TOKEN: "100"}
        _, body, _ = await fetch(
            session,
            "POST",
            f"balance/v1.2/1/allowances/{SPENDER}/{WALLET_A}",
            json_body={"tokens": []},
        )
        assert body == {}


async def test_balances_multiple_post(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    status, body, _ = await fetch(
        session,
        "POST",
        "balance/v1.2/1/balances/multiple/walletsAndTokens",
        json_body={"tokens": [USDT, LOCAL], "wallets": [TREASURY.lower(), OPS]},
    )
    assert status == 200
    assert body == {
        TREASURY: {USDT: "0", LOCAL: "2000000" + "0" * 18, NATIVE: "120" + "0" * 18},
        OPS: {USDT: "12000000000", LOCAL: "0", NATIVE: "2500000000000000000"},
    }


async def test_allowances_and_balances_get_and_post(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    status, body, _ = await fetch(
        session, "GET", f"balance/v1.2/1/allowancesAndBalances/{ROUTER}/{TREASURY}"
    )
    assert status == 200
    assert body[USDC] == {"balance": "250000000000", "allowance": MAX}
    assert body[USDT] == {"balance": "0", "allowance": "0"}
    assert LOCAL not in body
    status, body, _ = await fetch(
        session,
        "POST",
        f"balance/v1.2/1/allowancesAndBalances/{ROUTER}/{TREASURY}",
        json_body={"tokens": [LOCAL]},
    )
    assert status == 200
    assert body == {
        LOCAL: {"balance": "2000000" + "0" * 18, "allowance": "500000" + "0" * 18},
        NATIVE: {"balance": "120" + "0" * 18, "allowance": MAX},
    }


async def test_allowances_get_and_post(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    status, body, _ = await fetch(session, "GET", f"balance/v1.2/1/allowances/{PERMIT2}/{TREASURY}")
    assert status == 200
    assert body[WETH] == UINT160_MAX and body[USDC] == "0" and body[NATIVE] == MAX
    status, body, _ = await fetch(
        session,
        "POST",
        f"balance/v1.2/1/allowances/{ROUTER}/{TREASURY}",
        json_body={"tokens": [LOCAL, USDC]},
    )
    assert status == 200
    assert body == {LOCAL: "500000" + "0" * 18, USDC: MAX, NATIVE: MAX}


@pytest.mark.parametrize(
    "body",
    [None, [], {"tokens": "0xabc"}, {"tokens": [1]}, {"tokens": ["0xbad"]}, {"wallets": []}],
)
async def test_custom_token_posts_reject_bad_bodies(body: object) -> None:
    async with serving(small()) as (_, session):
        status, answer, _ = await fetch(
            session,
            "POST",
            f"balance/v1.2/1/allowancesAndBalances/{SPENDER}/{WALLET_A}",
            json_body=body,
        )
        assert status == 400
        assert answer["statusCode"] == 400


async def test_custom_tokens_are_only_visible_through_posts() -> None:
    async with serving(small()) as (_, session):
        _, listed, _ = await fetch(session, "GET", f"balance/v1.2/1/balances/{WALLET_A}")
        assert CUSTOM not in listed
        _, asked, _ = await fetch(
            session, "POST", f"balance/v1.2/1/balances/{WALLET_A}", json_body={"tokens": [CUSTOM]}
        )
        assert asked[CUSTOM] == "0"


# --- prices ----------------------------------------------------------------------------------


async def test_price_whitelist_in_native_wei_and_usd(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    status, wei, _ = await fetch(session, "GET", "price/v1.1/1")
    assert status == 200
    assert wei[NATIVE] == "1000000000000000000"
    assert wei[WETH] == "1000000000000000000"
    assert wei[USDC] == str(10**18 // 3500)
    assert wei[UNI] == str(95 * 10**17 // 3500)
    assert LOCAL not in wei, "no price: omitted"
    status, usd, _ = await fetch(session, "GET", "price/v1.1/1?currency=USD")
    assert status == 200
    assert usd[UNI] == "9.50" and usd[NATIVE] == "3500"


async def test_price_post_and_get_by_addresses(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    status, body, _ = await fetch(
        session, "POST", "price/v1.1/1", json_body={"tokens": [UNI, LOCAL], "currency": "USD"}
    )
    assert (status, body) == (200, {UNI: "9.50"})
    status, body, _ = await fetch(session, "POST", "price/v1.1/1", json_body={"tokens": [DAI]})
    assert (status, body) == (200, {DAI: str(10**18 // 3500)})
    status, body, _ = await fetch(session, "GET", f"price/v1.1/1/{USDC},{WETH}?currency=USD")
    assert (status, body) == (200, {USDC: "1.00", WETH: "3500"})
    status, body, _ = await fetch(session, "GET", f"price/v1.1/1/{USDC},0xbad")
    assert status == 400 and body["meta"] == [{"type": "address", "value": "0xbad"}]


async def test_price_currencies_and_non_usd_currencies(
    default_sim: tuple[RunningSimulator, aiohttp.ClientSession],
) -> None:
    _, session = default_sim
    status, body, _ = await fetch(session, "GET", "price/v1.1/1/currencies")
    assert status == 200
    assert body["codes"][0] == "USD" and "EUR" in body["codes"] and len(body["codes"]) == 45
    status, body, _ = await fetch(session, "GET", "price/v1.1/1?currency=EUR")
    assert status == 400 and "only in USD" in body["description"]
    status, body, _ = await fetch(session, "GET", "price/v1.1/1?currency=XYZ")
    assert status == 400 and "unknown currency" in body["description"]


# --- protocol details ------------------------------------------------------------------------


async def test_every_response_carries_a_fresh_request_id() -> None:
    async with serving(small()) as (simulator, session):
        ids = set()
        for url in (
            aggregated_url(1, SPENDER, [WALLET_A], "true"),
            aggregated_url(1, SPENDER, ["0xbad"], "true"),
            "balance/v1.2/1/nothing-here",
            "price/v1.1/1",
        ):
            _, body, response = await fetch(session, "GET", url)
            request_id = response.headers["X-Request-Id"]
            assert UUID.fullmatch(request_id)
            if isinstance(body, dict) and "requestId" in body:
                assert body["requestId"] == request_id
            ids.add(request_id)
        assert len(ids) == 4
        assert {r.request_id for r in simulator.requests} == ids


async def test_message_error_body_shape_knob() -> None:
    async with serving(small(behaviour={"error_body": "message"})) as (_, session):
        status, body, _ = await fetch(session, "GET", aggregated_url(1, SPENDER, ["0xbad"], "true"))
        assert status == 400
        assert set(body) == {"statusCode", "message", "error"}
        assert body["error"] == "Bad Request" and "0xbad" in body["message"]


async def test_unknown_paths_and_methods_get_error_bodies() -> None:
    async with serving(small()) as (_, session):
        status, body, _ = await fetch(session, "GET", "balance/v1.2/1/whatever")
        assert status == 404 and body["statusCode"] == 404
        status, body, response = await fetch(
            session, "DELETE", f"balance/v1.2/1/balances/{WALLET_A}"
        )
        assert status == 405 and body["statusCode"] == 405
        assert "GET" in response.headers["Allow"]


async def test_requests_are_recorded_without_the_key() -> None:
    async with serving(small(api_key="sekret-key-123"), FakeClock(50.0)) as (simulator, session):
        await fetch(
            session,
            "GET",
            f"balance/v1.2/1/balances/{WALLET_A}?apiKey=sekret-key-123",
            headers={"Authorization": "Bearer sekret-key-123"},
        )
        await fetch(session, "GET", f"balance/v1.2/1/balances/{WALLET_A}")
        first, second = simulator.requests
        assert first.received_at == 50.0
        assert (first.method, first.path, first.status) == (
            "GET",
            f"/balance/v1.2/1/balances/{WALLET_A}",
            200,
        )
        assert first.authorization_present and not second.authorization_present
        assert second.status == 401
        assert "sekret" not in repr(simulator.requests)
        assert "sekret" not in repr(simulator.scenario)


# --- auth ------------------------------------------------------------------------------------


async def test_api_key_is_required_when_configured() -> None:
    async with serving(small(api_key="k-1")) as (_, session):
        url = f"balance/v1.2/1/balances/{WALLET_A}"
        for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "k-1"}):
            status, body, _ = await fetch(session, "GET", url, headers=headers)
            assert status == 401
            assert body["statusCode"] == 401 and body["error"] == "Unauthorized"
        status, _, _ = await fetch(session, "GET", url, headers={"Authorization": "Bearer k-1"})
        assert status == 200


async def test_without_api_key_any_or_no_key_is_accepted() -> None:
    async with serving(small()) as (_, session):
        url = f"balance/v1.2/1/balances/{WALLET_A}"
        for headers in (None, {"Authorization": "Bearer anything"}):
            status, _, _ = await fetch(session, "GET", url, headers=headers)
            assert status == 200


# --- rate limit ------------------------------------------------------------------------------


async def test_rate_limit_refuses_requests_beyond_r_per_second() -> None:
    clock = FakeClock()
    url = f"balance/v1.2/1/balances/{WALLET_A}"
    async with serving(small(requests_per_second=2), clock) as (_, session):
        statuses = [(await fetch(session, "GET", url))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]
        _, body, response = await fetch(session, "GET", url)
        assert body["statusCode"] == 429
        assert "Retry-After" not in response.headers
        clock.advance(1.0)
        assert (await fetch(session, "GET", url))[0] == 200


async def test_rate_limit_sends_retry_after_when_configured() -> None:
    clock = FakeClock()
    url = f"balance/v1.2/1/balances/{WALLET_A}"
    async with serving(small(requests_per_second=1, retry_after_s=3), clock) as (_, session):
        assert (await fetch(session, "GET", url))[0] == 200
        status, _, response = await fetch(session, "GET", url)
        assert status == 429
        assert response.headers["Retry-After"] == "3"


async def test_rate_limit_admits_a_client_spacing_requests_exactly_one_over_r() -> None:
    clock = FakeClock()
    url = f"balance/v1.2/1/balances/{WALLET_A}"
    async with serving(small(requests_per_second=4), clock) as (_, session):
        statuses = []
        for step in range(12):
            # loopback jitter: some requests arrive a little early
            clock.now = 1000.0 + step * 0.25 - (0.01 if step % 3 == 0 else 0.0)
            statuses.append((await fetch(session, "GET", url))[0])
        assert statuses == [200] * 12


async def test_rate_limited_requests_count_as_arrivals() -> None:
    clock = FakeClock()
    url = f"balance/v1.2/1/balances/{WALLET_A}"
    async with serving(small(requests_per_second=1), clock) as (_, session):
        assert (await fetch(session, "GET", url))[0] == 200
        clock.advance(0.5)
        assert (await fetch(session, "GET", url))[0] == 429
        clock.advance(0.6)  # 1.1 s after the first, 0.6 s after the refused one
        assert (await fetch(session, "GET", url))[0] == 429
        clock.advance(1.0)
        assert (await fetch(session, "GET", url))[0] == 200


async def test_control_endpoints_are_neither_rate_limited_nor_keyed() -> None:
    async with serving(small(requests_per_second=1, api_key="k")) as (simulator, session):
        for _ in range(3):
            status, body, _ = await fetch(session, "GET", "_simulator/state")
            assert status == 200
        assert body["requests"] == 0
        assert simulator.requests == []
