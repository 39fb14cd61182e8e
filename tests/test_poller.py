"""One poll against the real simulator: batching, custom tokens, failures and tolerances."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from importlib import resources
from typing import Any

import aiohttp
import pytest
import yaml

from monitor.config import Config, parse_config
from monitor.config.model import DEFAULT_UNLIMITED_THRESHOLD as T
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX, BatchOutcome, PollResult, is_unlimited
from monitor.oneinch import BalanceClient, RateLimiter
from monitor.oneinch.client import RetryPolicy
from monitor.poller import PollMemo, poll_once
from monitor.simulator.faults import Fault
from monitor.simulator.scenario import Scenario, parse_scenario
from monitor.simulator.server import RunningSimulator, run_simulator

TREASURY = "0x5014ef5ed72014e90b82285ea7888b4a091409ec"
OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
COLD = "0x02487d261e10ae9fc6c76e86bb80b0fac04676c4"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
LOCAL = "0x4a6f0e7d3c5b2a1908f7e6d5c4b3a29180706050"


def fast_client(session: aiohttp.ClientSession, base_url: str) -> BalanceClient:
    return BalanceClient(
        session,
        base_url=base_url,
        api_key=None,
        limiter=RateLimiter(1000),
        retry=RetryPolicy(max_attempts=2, backoff_initial_s=0.0, backoff_max_s=0.0),
    )


def monitor_config(scenario: Scenario, base_url: str, **api: Any) -> Config:
    doc = scenario.monitor_config(base_url)
    doc_api = dict(doc.get("api", {}))  # type: ignore[call-overload]
    doc_api.update(api)
    doc["api"] = doc_api
    return parse_config(doc)


@pytest.fixture
async def polled(
    simulator: RunningSimulator, http_session: aiohttp.ClientSession, default_scenario: Scenario
) -> AsyncIterator[tuple[RunningSimulator, BalanceClient, Config]]:
    yield (
        simulator,
        fast_client(http_session, simulator.base_url),
        monitor_config(default_scenario, simulator.base_url, max_wallets_per_request=2),
    )


async def test_polls_every_chain_spender_and_wallet_batch(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    simulator, client, config = polled
    result = await poll_once(client, config)
    assert result.ok
    aggregated = [b for b in result.batches if b.kind == "aggregated"]
    # 3 wallets in batches of 2 -> 2 batches, for 4 spenders on chain 1 and 1 on chain 8453
    expected = {(1, s.address) for s in config.chains[0].spenders} | {(8453, ROUTER)}
    assert {(b.chain_id, b.spender) for b in aggregated} == expected
    assert len(aggregated) == 2 * 4 + 2
    assert all(len(b.wallets) <= 2 for b in aggregated)
    assert all(b.request_id for b in result.batches)
    # custom tokens: one POST per (wallet, spender) on chain 1
    assert len([b for b in result.batches if b.kind == "custom"]) == 3 * 4
    assert len(simulator.requests) == len(result.batches)


async def test_positions_carry_unlimited_finite_and_native(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    _, client, config = polled
    positions = {p.key: p for p in (await poll_once(client, config)).positions}
    usdc = positions[(1, TREASURY, USDC, ROUTER)]
    assert usdc.allowance == UINT256_MAX and is_unlimited(usdc, T)
    assert usdc.token.decimals == 6
    native = positions[(1, TREASURY, NATIVE_TOKEN, ROUTER)]
    assert native.token.is_native and not is_unlimited(native, T)
    weth = positions[(1, OPS, WETH, ROUTER)]
    assert weth.balance == 0 and is_unlimited(weth, T)  # approved with nothing held yet
    local = positions[(1, TREASURY, LOCAL, ROUTER)]
    assert (local.token.symbol, local.token.decimals) == ("LOCAL", 18)
    assert 0 < local.allowance < UINT256_MAX
    # nothing held and nothing approved: absent, as filterEmpty would have it
    assert all(
        p.balance > 0 or (p.allowance > 0 and not p.token.is_native) for p in positions.values()
    )
    assert not any(
        p.token.address == NATIVE_TOKEN and p.wallet == OPS and p.balance == 0
        for p in positions.values()
    )


async def test_custom_answers_keep_only_the_tokens_asked_for(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    _, client, config = polled
    result = await poll_once(client, config)
    custom = [p for b in result.batches if b.kind == "custom" for p in b.positions]
    assert custom
    assert {p.token.address for p in custom} == {LOCAL}  # the unasked native coin is ignored


async def test_a_failed_batch_is_reported_and_the_others_still_succeed(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    simulator, client, config = polled
    simulator.add_fault(
        Fault(endpoint="aggregated", chain_id=1, spender=ROUTER, wallet=OPS, status=503)
    )
    result = await poll_once(client, config)
    assert not result.ok
    (failed,) = result.failures
    assert (failed.chain_id, failed.spender, failed.kind) == (1, ROUTER, "aggregated")
    assert OPS in failed.wallets
    assert failed.positions == ()
    assert failed.error_reason == "unavailable"
    assert failed.request_id  # the last attempt's X-Request-Id
    assert "HTTP 503" in (failed.error or "")
    ok_positions = result.positions
    assert any(
        p.wallet == TREASURY and p.spender == ROUTER and p.chain_id == 8453 for p in ok_positions
    )


async def test_wallet_narrowed_to_one_chain_is_not_polled_on_others(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    _, client, config = polled
    narrowed = replace(
        config,
        wallets=tuple(replace(w, chains=(1,)) if w.address == COLD else w for w in config.wallets),
    )
    result = await poll_once(client, narrowed)
    assert all(COLD not in b.wallets for b in result.batches if b.chain_id == 8453)


@pytest.mark.parametrize("filter_mode", ["token", "wallet"])
@pytest.mark.parametrize("key_case", ["checksum", "lower", "echo"])
async def test_same_positions_whatever_filter_empty_and_key_casing_upstream_uses(
    http_session: aiohttp.ClientSession, filter_mode: str, key_case: str
) -> None:
    """docs/1inch-notes.md, open questions 4 and 5: the answer must not depend on them."""

    async def positions(behaviour: dict[str, str], filter_empty: bool) -> set[tuple[object, ...]]:
        data = yaml.safe_load(
            resources.files("monitor.simulator").joinpath("default_scenario.yaml").read_text()
        )
        data["behaviour"] = behaviour
        scenario = parse_scenario(data)
        async with run_simulator(scenario) as sim:
            config = monitor_config(scenario, sim.base_url, filter_empty=filter_empty)
            result = await poll_once(fast_client(http_session, sim.base_url), config)
        assert result.ok
        return {(p.key, p.balance, p.allowance) for p in result.positions}

    reference = await positions({}, filter_empty=False)
    observed = await positions(
        {"filter_empty": filter_mode, "wallet_key_case": key_case}, filter_empty=True
    )
    assert observed == reference
    assert any(key[0][2] == DAI for key in reference)


@pytest.mark.parametrize("key_case", ["checksum", "lower", "echo"])
async def test_positions_share_the_configs_wallet_strings(
    http_session: aiohttp.ClientSession, default_scenario: Scenario, key_case: str
) -> None:
    """Issue 7: one string per wallet, not a fresh copy per (token, spender) in every poll."""
    scenario = replace(
        default_scenario, behaviour=replace(default_scenario.behaviour, wallet_key_case=key_case)
    )
    async with run_simulator(scenario) as sim:
        config = monitor_config(scenario, sim.base_url, max_wallets_per_request=2)
        result = await poll_once(fast_client(http_session, sim.base_url), config)
    assert result.ok
    configured = {id(w.address) for w in config.wallets}
    aggregated = [p for b in result.batches if b.kind == "aggregated" for p in b.positions]
    assert len(aggregated) > len(config.wallets)
    assert {id(p.wallet) for p in aggregated} <= configured


async def test_progress_hooks_see_the_total_first_then_every_batch_once(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    simulator, client, config = polled
    simulator.add_fault(Fault(endpoint="aggregated", status=400, count=1))
    seen: list[object] = []
    result = await poll_once(client, config, on_start=seen.append, on_batch=seen.append)
    assert seen[0] == len(result.batches) == 22
    assert sorted(map(id, seen[1:])) == sorted(map(id, result.batches))
    assert len(result.failures) == 1  # a failed batch is reported too


async def test_a_token_another_source_reads_is_vouched_for_only_if_1inch_returned_it(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    """1inch's silence about a token it may not list must not read as a revoke of what the
    chain reader found: a foreign token absent from an answer leaves that batch's coverage."""
    _, client, config = polled
    unlisted = "0x" + "9a" * 20
    returned_somewhere = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"  # USDC, in the answers
    result = await poll_once(
        client,
        config,
        foreign_tokens=lambda _chain, _spender: frozenset({unlisted, returned_somewhere}),
    )
    aggregated = [b for b in result.batches if b.kind == "aggregated" and b.ok]
    assert aggregated
    for batch in aggregated:
        assert unlisted in batch.except_tokens
        returned = {p.token.address for p in batch.positions}
        assert (returned_somewhere in batch.except_tokens) == (returned_somewhere not in returned)
    assert any(returned_somewhere not in b.except_tokens for b in aggregated)
    # Without another source, nothing is left out but the custom tokens and unobserved ones.
    plain = await poll_once(client, config)
    assert all(unlisted not in b.except_tokens for b in plain.batches if b.kind == "aggregated")


async def test_an_answer_identical_to_the_last_is_neither_parsed_nor_built_again(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    _, client, config = polled
    memo = PollMemo()

    def aggregated(result: PollResult) -> dict[tuple[int, str, tuple[str, ...]], BatchOutcome]:
        return {
            (b.chain_id, b.spender, b.wallets): b for b in result.batches if b.kind == "aggregated"
        }

    first = aggregated(await poll_once(client, config, memo=memo))
    second = aggregated(await poll_once(client, config, memo=memo))  # the scenario's poll 2
    assert second.keys() == first.keys()
    for key, batch in second.items():
        assert batch.positions is first[key].positions  # the same answer: nothing rebuilt
        assert batch.request_id and batch.request_id != first[key].request_id
        # The answer's digest says so, for the store (a repeat is not compared again).
        assert batch.answer_digest is not None and batch.answer_digest == first[key].answer_digest
    third = aggregated(await poll_once(client, config, memo=memo))  # ops approves DAI to the router
    rebuilt = {key for key, batch in third.items() if batch.positions is not second[key].positions}
    [ops_router] = [k for k in first if k[:2] == (1, ROUTER) and OPS in k[2]]
    assert rebuilt == {ops_router}
    redigested = {k for k, b in third.items() if b.answer_digest != second[k].answer_digest}
    assert redigested == {ops_router}
    granted = [p for p in third[ops_router].positions if (p.wallet, p.token.address) == (OPS, DAI)]
    assert [p.allowance for p in granted] == [UINT256_MAX]
    before = [p for p in second[ops_router].positions if (p.wallet, p.token.address) == (OPS, DAI)]
    assert [p.allowance for p in before] == [0]


async def test_without_a_memo_every_answer_is_parsed_and_built_anew(
    polled: tuple[RunningSimulator, BalanceClient, Config],
) -> None:
    _, client, config = polled
    first = await poll_once(client, config)
    second = await poll_once(client, config)
    for a, b in zip(first.batches, second.batches, strict=True):
        assert a.positions == b.positions
        assert not a.positions or a.positions is not b.positions
        assert a.answer_digest is None  # no memo, no digest: never taken for a repeat
