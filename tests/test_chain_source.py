"""``ChainPositions``, the chain reader as a position source, against the simulator's Web3 RPC
API: a first scan spread over several polls by its time budget, a failing node reported as
failed batches, a node serving another chain refused."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from monitor.chain.rpc import ChainRpc, RpcEndpoint
from monitor.chain.source import ChainPositions
from monitor.config import Config, parse_config
from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import UINT256_MAX
from monitor.oneinch import RateLimiter
from monitor.runtime import open_store
from monitor.simulator.faults import Fault
from monitor.simulator.scenario import load_scenario
from monitor.simulator.server import RunningSimulator, run_simulator
from monitor.store.discovery import SqlDiscoveryStore

BANCOR = "0x8dfeb86c7c962577ded19ab2050ac78654fea9f7"  # on the exploit list, in no config
TREASURY = "0x5014ef5ed72014e90b82285ea7888b4a091409ec"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
PLAIN_ACCOUNT = "0x0000a1c3e8b2a7cdc4e7f9d3e5c0b6f8e2d40000"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"


@asynccontextmanager
async def chain_source(
    tmp_path: Path, *, max_block_range: int, scan_budget_s: float | None, path: str = "/web3/1"
) -> AsyncIterator[tuple[RunningSimulator, ChainPositions, Config]]:
    scenario = load_scenario(None)
    async with run_simulator(scenario) as simulator, aiohttp.ClientSession() as session:
        document = scenario.monitor_config(simulator.base_url, discovery=True)
        document["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
        document["rpc"] = {"max_block_range": max_block_range}
        config = parse_config(document)
        rpc = ChainRpc(
            session,
            RpcEndpoint(chain_id=1, url=simulator.base_url + path, headers={}, origin="test"),
            limiter=RateLimiter(1000),
            max_attempts=2,
            backoff_initial_s=0.01,
            backoff_max_s=0.01,
        )
        config = dataclasses.replace(config, chains=tuple(c for c in config.chains if c.id == 1))
        async with open_store(config) as store:
            source = ChainPositions(
                config,
                {1: rpc},
                SqlDiscoveryStore(store.engine),
                scan_budget_s=scan_budget_s,
            )
            yield simulator, source, config


async def test_a_long_first_scan_goes_on_over_polls_and_reads_what_it_found(
    tmp_path: Path,
) -> None:
    async with chain_source(tmp_path, max_block_range=10, scan_budget_s=0.15) as (
        _,
        source,
        _,
    ):
        first = await source.poll()
        assert not first.failures
        # The chain's discovery as a whole is a scope of its own (spender ""), covering
        # nothing: the chain counts as read even before any approval is found.
        (whole,) = [b for b in first.batches if b.spender == ""]
        assert whole.ok and whole.tokens == frozenset() and whole.positions == ()
        (status,) = source.status()
        assert status.scanning
        assert status.head_block is not None and status.scanned_to is not None
        assert status.scanned_to < status.head_block - 12
        scanned_before = status.scanned_to
        polls = 1
        while source.status()[0].scanning:
            result = await source.poll()
            assert not result.failures
            assert source.status()[0].scanned_to >= scanned_before  # never goes back
            scanned_before = source.status()[0].scanned_to or 0
            polls += 1
            assert polls < 400
        assert polls > 1
        final = await source.poll()
        found = {
            p.key: p.allowance
            for p in final.positions
            if p.spender == BANCOR and not p.token.is_native
        }
        assert found == {(1, TREASURY, WETH, BANCOR): UINT256_MAX}
        assert all(p.source == "chain" for p in final.positions)


async def test_each_poll_reads_the_live_values_and_only_changed_ones_change(
    tmp_path: Path,
) -> None:
    """The default scenario's timeline, within seven polls: ops grants DAI to the router and
    revokes it, grants USDT to a plain account and revokes it; treasury's USDC drops from
    250,000 to 225,000. Each change shows at a poll, and nothing else ever changes."""
    async with chain_source(tmp_path, max_block_range=10_000, scan_budget_s=None) as (
        _,
        source,
        _,
    ):
        polls = []
        for _ in range(7):
            result = await source.poll()
            assert not result.failures
            polls.append({p.key: (p.balance, p.allowance) for p in result.positions})
    dai = (1, OPS, DAI, ROUTER)
    usdt = (1, OPS, USDT, PLAIN_ACCOUNT)
    usdc = (1, TREASURY, USDC, ROUTER)
    ops_ether = (1, OPS, NATIVE_TOKEN, PLAIN_ACCOUNT)  # a position of the new spender's batch
    changed = {
        key
        for before, after in itertools.pairwise(polls)
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    }
    assert changed == {dai, usdt, usdc, ops_ether}
    assert polls[-1][dai] == (1_500 * 10**18, 0)
    assert (1_500 * 10**18, UINT256_MAX) in [poll.get(dai) for poll in polls]
    assert (12_000 * 10**6, 8_000 * 10**6) in [poll.get(usdt) for poll in polls]
    assert polls[-1][usdt] == (12_000 * 10**6, 0)
    assert polls[0][usdc] == (250_000 * 10**6, UINT256_MAX)
    assert polls[-1][usdc] == (225_000 * 10**6, UINT256_MAX)


async def test_a_failing_node_makes_failed_batches_never_an_empty_answer(
    tmp_path: Path,
) -> None:
    async with chain_source(tmp_path, max_block_range=10_000, scan_budget_s=None) as (
        simulator,
        source,
        _,
    ):
        ok = await source.poll()
        assert ok.positions and not ok.failures
        spenders = {b.spender for b in ok.batches}
        simulator.add_fault(Fault(endpoint="web3", status=503, count=None))
        failed = await source.poll()
        assert failed.positions == ()
        assert failed.batches and all(not b.ok for b in failed.batches)
        # One failed batch per spender it knew of: those scopes are unknown, not empty.
        assert {b.spender for b in failed.batches} == spenders
        assert source.status()[0].last_error is not None
        assert "503" in (source.status()[0].last_error or "")


async def test_a_node_of_another_chain_is_refused(tmp_path: Path) -> None:
    async with chain_source(
        tmp_path, max_block_range=10_000, scan_budget_s=None, path="/web3/8453"
    ) as (_, source, _):
        result = await source.poll()
    assert result.positions == () and result.batches
    assert all(not b.ok for b in result.batches)
    assert "eth_chainId answered 8453, but this endpoint is configured for chain 1" in (
        result.batches[0].error or ""
    )
