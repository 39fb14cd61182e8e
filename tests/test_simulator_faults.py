"""Poll-count timeline semantics and injected faults, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from monitor.simulator.faults import Fault
from monitor.simulator.scenario import load_scenario
from tests.simulator_helpers import (
    DAI,
    MAX,
    NATIVE,
    OPS,
    PERMIT2,
    ROUTER,
    SPENDER,
    TOKEN,
    TREASURY,
    USDC,
    WALLET_A,
    WALLET_B,
    FakeClock,
    aggregated_url,
    fetch,
    poll,
    position,
    serving,
    small,
)

AGGREGATED_A = aggregated_url(1, SPENDER, [WALLET_A], "true")


def _dai_allowance(tokens: list[dict[str, Any]]) -> str | None:
    entry = position(tokens, DAI, OPS)
    return None if entry is None else entry["allowance"]


# --- poll count ------------------------------------------------------------------------------


async def test_default_timeline_approves_and_revokes_dai_by_poll_count() -> None:
    async with serving(load_scenario(None)) as (simulator, session):
        seen = []
        for expected_count in range(1, 8):
            seen.append(_dai_allowance(await poll(session, ROUTER, [TREASURY, OPS])))
            assert simulator.poll_count(1, ROUTER, OPS) == expected_count
        assert seen == ["0", "0", MAX, MAX, MAX, "0", "0"]


async def test_default_timeline_drops_treasury_usdc_at_poll_4_per_spender() -> None:
    async with serving(load_scenario(None)) as (_, session):
        balances = []
        for _ in range(4):
            tokens = await poll(session, ROUTER, [TREASURY])
            entry = position(tokens, USDC, TREASURY)
            assert entry is not None
            balances.append(entry["balance"])
        assert balances == ["250000000000"] * 3 + ["225000000000"]
        # Permit2's counter for treasury is still at its first poll: same balance as poll 1.
        first_permit2 = position(await poll(session, PERMIT2, [TREASURY]), USDC, TREASURY)
        assert first_permit2 is not None and first_permit2["balance"] == "250000000000"


async def test_a_faulted_request_does_not_advance_the_poll_count() -> None:
    async with serving(load_scenario(None)) as (simulator, session):
        await poll(session, ROUTER, [OPS])
        await poll(session, ROUTER, [OPS])
        simulator.add_fault(Fault(endpoint="aggregated", status=503, count=1))
        status, _, _ = await fetch(session, "GET", aggregated_url(1, ROUTER, [OPS], "true"))
        assert status == 503
        assert simulator.poll_count(1, ROUTER, OPS) == 2
        assert _dai_allowance(await poll(session, ROUTER, [OPS])) == MAX, "poll 3 not skipped"
        assert simulator.poll_count(1, ROUTER, OPS) == 3


@pytest.mark.parametrize(
    ("body", "advances"),
    [
        ("truncated", False),
        ("not_json", False),
        ("non_numeric_amount", False),
        ("missing_fields", False),
        ("html", False),
        ("error", False),
        ("extra_fields", True),
        ("ok", True),
    ],
)
async def test_only_complete_answers_advance_the_poll_count(body: str, advances: bool) -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(endpoint="aggregated", body=body, count=1))
        await fetch(session, "GET", AGGREGATED_A)
        assert simulator.poll_count(1, SPENDER, WALLET_A) == (1 if advances else 0)


async def test_poll_count_is_per_chain_spender_and_wallet() -> None:
    async with serving(small()) as (simulator, session):
        await poll(session, SPENDER, [WALLET_A, WALLET_B])
        await poll(session, SPENDER, [WALLET_A])
        await poll(session, ROUTER, [WALLET_A])
        assert simulator.poll_count(1, SPENDER, WALLET_A.upper().replace("0X", "0x")) == 2
        assert simulator.poll_count(1, SPENDER, WALLET_B) == 1
        assert simulator.poll_count(1, ROUTER, WALLET_A) == 1
        assert simulator.poll_count(8453, SPENDER, WALLET_A) == 0
        assert simulator.poll_count(1, SPENDER, "0x" + "00" * 20) == 0


async def test_other_endpoints_read_the_current_poll_without_advancing_it() -> None:
    async with serving(load_scenario(None)) as (simulator, session):
        url = f"balance/v1.2/1/allowances/{ROUTER}/{OPS}"
        _, before, _ = await fetch(session, "GET", url)
        assert before[DAI] == "0", "no poll yet: reads poll 1"
        for _ in range(3):
            await poll(session, ROUTER, [OPS])
        _, after, _ = await fetch(session, "GET", url)
        assert after[DAI] == MAX, "reads poll 3"
        _, custom, _ = await fetch(session, "POST", url, json_body={"tokens": [DAI]})
        assert custom[DAI] == MAX
        assert simulator.poll_count(1, ROUTER, OPS) == 3


async def test_balance_endpoints_without_spender_read_the_highest_count() -> None:
    async with serving(load_scenario(None)) as (_, session):
        url = f"balance/v1.2/1/balances/{TREASURY}"
        for _ in range(4):
            await poll(session, ROUTER, [TREASURY])
        _, body, _ = await fetch(session, "GET", url)
        assert body[USDC] == "225000000000"


async def test_time_events_apply_by_elapsed_time_on_the_injected_clock() -> None:
    timeline = [
        {
            "at_s": 30,
            "set_balance": {"chain": 1, "wallet": WALLET_B, "token": TOKEN, "amount": "7"},
        },
        {
            "at_s": 60,
            "set_allowance": {
                "chain": 1,
                "wallet": WALLET_B,
                "token": TOKEN,
                "spender": SPENDER,
                "amount": "max",
            },
        },
    ]
    clock = FakeClock()
    async with serving(small(timeline=timeline), clock) as (_, session):
        assert await poll(session, SPENDER, [WALLET_B]) == []
        clock.advance(30)
        tokens = await poll(session, SPENDER, [WALLET_B])
        assert position(tokens, TOKEN, WALLET_B) == {"balance": "7", "allowance": "0"}
        clock.advance(30)
        tokens = await poll(session, SPENDER, [WALLET_B])
        assert position(tokens, TOKEN, WALLET_B) == {"balance": "7", "allowance": MAX}


async def test_later_poll_events_win_whatever_their_order_in_the_file() -> None:
    def event(at_poll: int, amount: str) -> dict[str, Any]:
        return {
            "at_poll": at_poll,
            "set_balance": {"chain": 1, "wallet": WALLET_A, "token": TOKEN, "amount": amount},
        }

    scenario = small(timeline=[event(3, "3"), event(2, "2")])
    async with serving(scenario) as (_, session):
        seen = []
        for _ in range(4):
            entry = position(await poll(session, SPENDER, [WALLET_A]), TOKEN, WALLET_A)
            assert entry is not None
            seen.append(entry["balance"])
        assert seen == ["100", "2", "3", "3"]


# --- fault kinds -----------------------------------------------------------------------------


async def test_error_fault_uses_the_configured_error_body_and_status() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(endpoint="aggregated", count=1))
        simulator.add_fault(Fault(endpoint="aggregated", status=403, retry_after_s=9, count=1))
        status, body, response = await fetch(session, "GET", AGGREGATED_A)
        assert status == 500
        assert body["statusCode"] == 500 and body["error"] == "Internal Server Error"
        assert body["requestId"] == response.headers["X-Request-Id"]
        assert "Retry-After" not in response.headers
        status, body, response = await fetch(session, "GET", AGGREGATED_A)
        assert status == 403 and body["error"] == "Forbidden"
        assert response.headers["Retry-After"] == "9"


async def test_html_fault_is_a_proxy_page() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(body="html", count=1))
        status, body, response = await fetch(session, "GET", AGGREGATED_A)
        assert status == 502
        assert response.content_type == "text/html"
        assert body.startswith("<html>") and "502 Bad Gateway" in body
        simulator.add_fault(Fault(body="html", status=520, count=1))
        status, body, _ = await fetch(session, "GET", AGGREGATED_A)
        assert status == 520 and "520" in body


async def test_truncated_fault_is_half_a_json_document() -> None:
    async with serving(small()) as (simulator, session):
        _, whole, _ = await fetch(session, "GET", AGGREGATED_A)
        simulator.add_fault(Fault(body="truncated", count=1))
        status, body, response = await fetch(session, "GET", AGGREGATED_A)
        assert status == 200 and response.content_type == "application/json"
        assert isinstance(body, str) and json.dumps(whole).startswith(body)
        with pytest.raises(ValueError):
            json.loads(body)


async def test_not_json_fault_is_text_with_status_200() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(endpoint="balances", body="not_json", count=1))
        status, body, response = await fetch(session, "GET", f"balance/v1.2/1/balances/{WALLET_A}")
        assert status == 200 and response.content_type == "text/plain"
        assert isinstance(body, str) and body


@pytest.mark.parametrize("bad", ["12.5", "abc"])
async def test_non_numeric_amount_fault_replaces_one_amount(bad: str) -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(body="non_numeric_amount", bad_amount=bad, count=1))
        status, body, _ = await fetch(session, "GET", AGGREGATED_A)
        assert status == 200
        amounts = [v for t in body for e in t["wallets"].values() for v in e.values()]
        assert amounts.count(bad) == 1
        assert sum(1 for a in amounts if not a.isdigit()) == 1


async def test_non_numeric_amount_fault_on_flat_answers() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(endpoint="balances", body="non_numeric_amount", count=1))
        _, body, _ = await fetch(session, "GET", f"balance/v1.2/1/balances/{WALLET_A}")
        assert sorted(body.values()).count("12.5") == 1


async def test_missing_fields_fault_stays_parseable() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(body="missing_fields", count=1))
        status, body, _ = await fetch(
            session, "GET", aggregated_url(1, SPENDER, [WALLET_A], "false")
        )
        assert status == 200 and isinstance(body, list) and len(body) == 2
        assert all("tags" not in t and "tracked" not in t for t in body)
        assert body[0]["wallets"] is not None and body[1]["wallets"] is None


async def test_extra_fields_fault_adds_unknown_fields_only() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(body="extra_fields"))
        status, body, _ = await fetch(session, "GET", AGGREGATED_A)
        assert status == 200
        token = body[0]
        assert {"eip2612", "providers", "rating"} <= set(token)
        entry = token["wallets"][next(iter(token["wallets"]))]
        assert entry["balance"] == "100" and entry["allowance"] == "50"
        assert set(entry) > {"balance", "allowance"}
        _, flat, _ = await fetch(session, "GET", f"balance/v1.2/1/balances/{WALLET_A}")
        assert flat == {NATIVE: "0", TOKEN: "100"}, "flat maps unchanged"


async def test_delay_fault_answers_late() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(body="ok", delay_s=0.15, count=1))
        started = time.monotonic()
        status, _, _ = await fetch(session, "GET", AGGREGATED_A)
        assert status == 200
        assert time.monotonic() - started >= 0.15
        assert simulator.poll_count(1, SPENDER, WALLET_A) == 1


async def test_hang_longer_than_the_client_timeout_does_not_advance_or_block_shutdown() -> None:
    started = time.monotonic()
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(body="ok", delay_s=60, count=1))
        with pytest.raises(asyncio.TimeoutError):
            async with session.get(AGGREGATED_A, timeout=aiohttp.ClientTimeout(total=0.1)):
                pass
        assert simulator.poll_count(1, SPENDER, WALLET_A) == 0
        assert await poll(session, SPENDER, [WALLET_A])
        assert simulator.poll_count(1, SPENDER, WALLET_A) == 1
    assert time.monotonic() - started < 5


async def test_an_answer_the_client_no_longer_waits_for_does_not_advance() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(body="ok", delay_s=0.2, count=1))
        with pytest.raises(asyncio.TimeoutError):
            async with session.get(AGGREGATED_A, timeout=aiohttp.ClientTimeout(total=0.05)):
                pass
        for _ in range(100):
            if simulator.requests:
                break
            await asyncio.sleep(0.01)
        assert [r.status for r in simulator.requests] == [499]
        assert simulator.poll_count(1, SPENDER, WALLET_A) == 0


# --- matching and composition ----------------------------------------------------------------


async def test_faults_compose_in_order_with_counts() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(status=429, count=2))
        simulator.add_fault(Fault(status=500, count=1))
        statuses = [(await fetch(session, "GET", AGGREGATED_A))[0] for _ in range(4)]
        assert statuses == [429, 429, 500, 200]
        assert simulator.active_faults() == []


async def test_fault_without_count_lasts_until_cleared() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(status=503))
        statuses = [(await fetch(session, "GET", AGGREGATED_A))[0] for _ in range(3)]
        assert statuses == [503, 503, 503]
        assert simulator.clear_faults() == 1
        assert (await fetch(session, "GET", AGGREGATED_A))[0] == 200


@pytest.mark.parametrize(
    ("fault", "hits"),
    [
        (Fault(endpoint="aggregated", status=500), [True, False, False]),
        (Fault(endpoint="balances", status=500), [False, True, False]),
        (Fault(endpoint="price", status=500), [False, False, True]),
        (Fault(endpoint="any", status=500), [True, True, True]),
        (Fault(chain_id=8453, status=500), [False, False, False]),
        (Fault(chain_id=1, status=500), [True, True, True]),
        (Fault(spender=SPENDER.upper().replace("0X", "0x"), status=500), [True, False, False]),
        (Fault(spender=ROUTER, status=500), [False, False, False]),
        (Fault(wallet=WALLET_A, status=500), [True, True, False]),
        (Fault(wallet=WALLET_B, status=500), [False, False, False]),
    ],
)
async def test_fault_filters(fault: Fault, hits: list[bool]) -> None:
    urls = [AGGREGATED_A, f"balance/v1.2/1/balances/{WALLET_A}", "price/v1.1/1"]
    async with serving(small()) as (simulator, session):
        simulator.add_fault(fault)
        statuses = [(await fetch(session, "GET", url))[0] for url in urls]
        assert statuses == [500 if hit else 200 for hit in hits]


async def test_fault_poll_window() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(endpoint="aggregated", status=500, from_poll=2, until_poll=3))
        statuses = []
        for _ in range(6):
            statuses.append((await fetch(session, "GET", AGGREGATED_A))[0])
        # poll 1 ok; poll 2 fails twice... until the fault is cleared it never advances past 2
        assert statuses == [200, 500, 500, 500, 500, 500]
        assert simulator.poll_count(1, SPENDER, WALLET_A) == 1
        simulator.clear_faults()
        simulator.add_fault(Fault(endpoint="aggregated", status=500, from_poll=4))
        statuses = [(await fetch(session, "GET", AGGREGATED_A))[0] for _ in range(4)]
        assert statuses == [200, 200, 500, 500]
        assert simulator.poll_count(1, SPENDER, WALLET_A) == 3


async def test_scenario_file_faults_are_active_from_the_start() -> None:
    scenario = small(faults=[{"endpoint": "aggregated", "status": 502, "body": "html", "count": 1}])
    async with serving(scenario) as (_, session):
        assert (await fetch(session, "GET", AGGREGATED_A))[0] == 502
        assert (await fetch(session, "GET", AGGREGATED_A))[0] == 200


async def test_faults_apply_only_to_valid_requests() -> None:
    async with serving(small()) as (simulator, session):
        simulator.add_fault(Fault(status=503, count=1))
        bad = aggregated_url(1, SPENDER, ["0xbad"], "true")
        assert (await fetch(session, "GET", bad))[0] == 400
        assert (await fetch(session, "GET", AGGREGATED_A))[0] == 503


# --- control endpoints -----------------------------------------------------------------------


async def test_control_endpoints_add_clear_and_report() -> None:
    async with serving(small()) as (_, session):
        status, body, _ = await fetch(
            session,
            "POST",
            "_simulator/faults",
            json_body={"endpoint": "aggregated", "status": 429, "retry_after_s": 2, "count": 1},
        )
        assert status == 201 and body["fault"]["status"] == 429 and body["active"] == 1
        status, _, response = await fetch(session, "GET", AGGREGATED_A)
        assert status == 429 and response.headers["Retry-After"] == "2"
        await fetch(session, "POST", "_simulator/faults", json_body={"status": 500})
        status, body, _ = await fetch(session, "DELETE", "_simulator/faults")
        assert (status, body) == (200, {"cleared": 1})
        await poll(session, SPENDER, [WALLET_A])
        status, state, _ = await fetch(session, "GET", "_simulator/state")
        assert status == 200
        assert state["requests"] == 2
        assert state["responses_by_status"] == {"429": 1, "200": 1}
        assert state["poll_counts"] == [
            {"chain": 1, "spender": SPENDER, "wallet": WALLET_A, "count": 1}
        ]
        assert state["faults"] == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"body": "garbage"}, "fault.body: must be one of"),
        ({"status": 99}, "fault.status: must be an integer 200..599"),
        ({"status": 204}, "fault.status: 204 cannot carry a body"),
        ({"wallet": "0xbad"}, "fault.wallet: not a valid address"),
        ({"colour": "red"}, "fault.colour: unknown key"),
        ({"from_poll": 3, "until_poll": 2}, "fault.until_poll: must not be below from_poll"),
        ([], "fault: must be a mapping"),
    ],
)
async def test_control_endpoint_rejects_invalid_faults(body: object, problem: str) -> None:
    async with serving(small()) as (simulator, session):
        status, answer, _ = await fetch(session, "POST", "_simulator/faults", json_body=body)
        assert status == 400
        assert answer["error"].startswith(problem)
        assert simulator.active_faults() == []


def test_fault_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        Fault(endpoint="nope")
    with pytest.raises(ValueError, match="count"):
        Fault(count=0)
    assert Fault(wallet=WALLET_A.upper().replace("0X", "0x")).wallet == WALLET_A
    assert Fault(body="html").effective_status == 502
    assert Fault(body="truncated").effective_status == 200
