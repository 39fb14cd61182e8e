"""The simulator's Web3 RPC API, through the real chain reader (ChainRpc, ApprovalScanner,
LiveReader): its Approval logs and reads agree with the scenario and with the Balance API at
the same moment, ranges are refused like Alchemy, auth/rate limit/faults apply, batches work
and fall back; and the reader sees the same on the simulator as on anvil for one scenario."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from monitor.chain.discovery import ApprovalScanner, is_range_refusal
from monitor.chain.reads import LiveReader
from monitor.chain.rpc import ChainRpc, RpcEndpoint
from monitor.errors import ConfigError, RateLimited, Rejected, RpcError
from monitor.oneinch import RateLimiter
from monitor.simulator.faults import Fault
from monitor.simulator.model import Scenario, Web3Spec
from monitor.simulator.scenario import load_scenario, parse_scenario
from monitor.simulator.server import RunningSimulator, run_simulator
from tests.chain_helpers import UINT256_MAX, Anvil, anvil_fixture
from tests.simulator_helpers import (
    COLD,
    DAI,
    FURUCOMBO,
    LOCAL,
    OPS,
    PERMIT2,
    ROUTER,
    TREASURY,
    UNKNOWN_SPENDER,
    USDC,
    USDT,
    WETH,
    poll,
)

BANCOR = "0x8dfeb86c7c962577ded19ab2050ac78654fea9f7"
COW_RELAYER = "0xc92e8bdf79f0507f65a392b0ab4667716bfe0110"
PHISHER = "0x0000a1c3e8b2a7cdc4e7f9d3e5c0b6f8e2d40000"
CONFIGURED = (ROUTER, PERMIT2, UNKNOWN_SPENDER, FURUCOMBO)
WALLETS = (TREASURY.lower(), OPS.lower(), COLD.lower())


@asynccontextmanager
async def web3(
    scenario: Scenario, *, headers: dict[str, str] | None = None, path: str = "/web3/1"
) -> AsyncIterator[tuple[RunningSimulator, ChainRpc, aiohttp.ClientSession]]:
    """A running simulator and a ChainRpc on its Web3 RPC API (fast retries)."""
    async with run_simulator(scenario) as simulator, aiohttp.ClientSession() as session:
        endpoint = RpcEndpoint(
            chain_id=1,
            url=simulator.base_url + path,
            headers=headers or {},
            origin="test",
        )
        rpc = ChainRpc(
            session,
            endpoint,
            limiter=RateLimiter(1000),
            max_attempts=3,
            backoff_initial_s=0.01,
            backoff_max_s=0.02,
            timeout_s=5.0,
        )
        yield simulator, rpc, session


def with_web3(scenario: Scenario, **changes: Any) -> Scenario:
    return dataclasses.replace(scenario, web3=dataclasses.replace(scenario.web3, **changes))


async def scan_all(rpc: ChainRpc, wallets: tuple[str, ...], **options: Any) -> Any:
    head = await rpc.block_number()
    scanner = ApprovalScanner(rpc, chain_id=1, **options)
    result = await scanner.scan(dict.fromkeys(wallets, 0), to_block=head - 12)
    return scanner, result, head


# -- logs ---------------------------------------------------------------------------------------


async def test_every_approval_of_the_default_scenario_is_a_log_the_scanner_finds() -> None:
    scenario = load_scenario(None)
    async with web3(scenario) as (_, rpc, _session):
        assert await rpc.chain_id() == 1
        _, result, head = await scan_all(rpc, WALLETS)

    assert head == scenario.web3.start_head
    found = {(a.owner, a.token, a.spender): a.value for a in result.approvals}
    expected = {
        (a.wallet, a.token, a.spender): a.approved or a.amount
        for a in scenario.allowances
        if a.chain_id == 1
    }
    assert found == expected
    # Discovered-only approvals: an exploited spender, a partly spent one (the log says what
    # was approved, 20,000 DAI).
    assert found[(TREASURY.lower(), WETH, BANCOR)] == UINT256_MAX
    assert found[(TREASURY.lower(), DAI, COW_RELAYER)] == 20_000 * 10**18
    assert BANCOR not in {s.address for s in scenario.spenders}
    assert all(a.block_number < head - 12 for a in result.approvals)


async def test_topic_and_address_filters_select_like_a_node() -> None:
    async with web3(load_scenario(None)) as (_, rpc, _session):
        head = await rpc.block_number()
        topic0 = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"

        def topic(address: str) -> str:
            return "0x" + "00" * 12 + address.lower()[2:]

        both = await rpc.get_logs(
            from_block=0, to_block=head, topics=[topic0, [topic(TREASURY), topic(OPS)]]
        )
        ops_only = await rpc.get_logs(from_block=0, to_block=head, topics=[topic0, topic(OPS)])
        to_router = await rpc.get_logs(
            from_block=0, to_block=head, topics=[topic0, None, topic(ROUTER)]
        )
        usdc = await rpc.get_logs(from_block=0, to_block=head, topics=[topic0], address=USDC)
        four_topics = await rpc.get_logs(
            from_block=0, to_block=head, topics=[topic0, None, None, None]
        )
        other_event = await rpc.get_logs(from_block=0, to_block=head, topics=["0x" + "11" * 32])

    assert len(both) == 10  # chain 1's allowances of treasury (7) and ops (3)
    assert {log["topics"][1] for log in ops_only} == {topic(OPS)}
    assert len(ops_only) == 3
    assert {log["topics"][2] for log in to_router} == {topic(ROUTER)}
    assert {log["address"] for log in usdc} == {USDC}
    assert four_topics == [] and other_event == []
    blocks = [(int(log["blockNumber"], 16), int(log["logIndex"], 16)) for log in both]
    assert blocks == sorted(blocks)


async def test_the_timeline_grants_and_revokes_in_logs_and_live_reads() -> None:
    async with web3(load_scenario(None)) as (simulator, rpc, _session):
        reader = LiveReader(rpc)
        scanner = ApprovalScanner(rpc, chain_id=1)
        head = await rpc.block_number()
        cursors = dict.fromkeys(WALLETS, 0)
        first = await scanner.scan(cursors, to_block=head - 12)
        assert PHISHER not in {a.spender for a in first.approvals}

        for _ in range(3):  # steps 2, 3, 4: ops approves 8,000 USDT to a plain account at 4
            head = await rpc.block_number()
        assert (simulator.chain_step(1), head) == (4, 5_075)
        granted = await scanner.scan(first.cursors, to_block=head - 12)
        (grant,) = [a for a in granted.approvals if a.spender == PHISHER]
        assert (grant.owner, grant.token, grant.spender) == (OPS.lower(), USDT, PHISHER)
        assert grant.value == 8_000 * 10**6 and grant.block_number == 5_051
        reads = await reader.read(
            block=head, allowances=[(OPS, USDT, PHISHER)], balances=[], natives=[]
        )
        assert reads.allowances[(OPS, USDT, PHISHER)] == 8_000 * 10**6
        assert await reader.has_code([PHISHER, BANCOR, USDT], block=head) == {
            PHISHER: False,
            BANCOR: True,
            USDT: True,
        }

        for _ in range(3):  # steps 5, 6, 7: revoked at step 7
            head = await rpc.block_number()
        revoked = await scanner.scan(granted.cursors, to_block=head - 12)
        after = await reader.read(
            block=head, allowances=[(OPS, USDT, PHISHER)], balances=[], natives=[]
        )
        before = await reader.read(
            block=grant.block_number - 1, allowances=[(OPS, USDT, PHISHER)], balances=[], natives=[]
        )

    assert [(a.spender, a.value) for a in revoked.approvals if a.spender == PHISHER] == [
        (PHISHER, 0)
    ]
    assert after.allowances[(OPS, USDT, PHISHER)] == 0
    assert before.allowances[(OPS, USDT, PHISHER)] == 0


async def test_a_partly_spent_approval_reads_what_is_left() -> None:
    async with web3(load_scenario(None)) as (_, rpc, _session):
        _, result, head = await scan_all(rpc, (TREASURY.lower(),))
        (log,) = [a for a in result.approvals if a.spender == COW_RELAYER]
        reader = LiveReader(rpc)
        key = (TREASURY.lower(), DAI, COW_RELAYER)
        at_head = await reader.read(block=head, allowances=[key], balances=[], natives=[])
        at_log = await reader.read(
            block=log.block_number, allowances=[key], balances=[], natives=[]
        )
        earlier = await reader.read(
            block=log.block_number - 1, allowances=[key], balances=[], natives=[]
        )

    assert log.value == 20_000 * 10**18
    assert at_head.allowances[key] == 7_500 * 10**18
    assert at_log.allowances[key] == 20_000 * 10**18
    assert earlier.allowances[key] == 0


# -- reads agree with the Balance API ----------------------------------------------------------


@pytest.mark.parametrize("multicall", [True, False], ids=["multicall", "plain-calls"])
async def test_reads_equal_the_balance_api_at_every_step(multicall: bool) -> None:
    scenario = with_web3(load_scenario(None), multicall=multicall)
    tokens = [t.address for t in scenario.chains[0].tokens if not t.native and not t.custom]
    pairs = [(w, t, s.lower()) for w in WALLETS for t in tokens for s in CONFIGURED]
    holdings = [(w, t) for w in WALLETS for t in tokens]
    async with web3(scenario) as (simulator, rpc, session):
        reader = LiveReader(rpc, calls_per_multicall=17)
        assert await reader.multicall_available(block=scenario.web3.start_head) is multicall
        for step in range(1, 8):
            api: dict[tuple[str, str, str], int] = {}
            balances: dict[tuple[str, str], int] = {}
            natives: dict[str, int] = {}
            async with aiohttp.ClientSession(base_url=simulator.base_url + "/") as balance:
                for spender in CONFIGURED:
                    for token in await poll(balance, spender, list(WALLETS), filter_empty="false"):
                        for wallet, entry in token["wallets"].items():
                            if token["address"] == "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee":
                                natives[wallet.lower()] = int(entry["balance"])
                                continue
                            key = (wallet.lower(), token["address"], spender.lower())
                            api[key] = int(entry["allowance"])
                            balances[(wallet.lower(), token["address"])] = int(entry["balance"])
            head = await rpc.block_number()
            assert simulator.chain_step(1) == step
            assert simulator.poll_count(1, ROUTER, TREASURY) == step
            reads = await reader.read(
                block=head, allowances=pairs, balances=holdings, natives=list(WALLETS)
            )
            assert reads.unreadable == 0
            assert reads.allowances == api, f"step {step}"
            assert reads.balances == balances, f"step {step}"
            assert reads.natives == natives, f"step {step}"
        metadata = await reader.token_metadata([USDC, LOCAL, ROUTER], block=head)
    del session
    assert (metadata[USDC].symbol, metadata[USDC].decimals, metadata[USDC].is_token) == (
        "USDC",
        6,
        True,
    )
    assert metadata[LOCAL].name == "Local Project Token"
    assert metadata[ROUTER].is_token is False


async def test_a_generated_world_is_found_and_read_whole() -> None:
    scenario = parse_scenario(
        {
            "generate": {"seed": 7, "chains": [1], "wallets": 12, "tokens": 3, "spenders": 2},
            "web3": {"history_blocks": 20_000, "max_block_range": 2_000},
        }
    )
    wallets = tuple(w.address for w in scenario.wallets)
    async with web3(scenario) as (_, rpc, _session):
        scanner, result, head = await scan_all(rpc, wallets, wallets_per_query=5)
        pairs = [(a.owner, a.token, a.spender) for a in result.approvals]
        reads = await LiveReader(rpc).read(block=head, allowances=pairs, balances=[], natives=[])

    assert len(set(pairs)) == len(pairs) == 12 * 3 * 2
    assert scanner.block_range <= 2_000
    assert all(a.value == reads.allowances[(a.owner, a.token, a.spender)] for a in result.approvals)


# -- provider behaviour ---------------------------------------------------------------------------


async def test_a_range_over_the_largest_is_refused_with_alchemys_text_and_the_scan_halves() -> None:
    scenario = with_web3(load_scenario(None), max_block_range=600)
    async with web3(scenario) as (_, rpc, _session):
        with pytest.raises(RpcError) as refused:
            await rpc.get_logs(from_block=0, to_block=1_000, topics=[None])
        scanner, result, _head = await scan_all(rpc, WALLETS, max_block_range=10_000)

    assert refused.value.code == -32602
    assert refused.value.rpc_message.startswith("Log response size exceeded.")
    assert "[0x0, 0x257]" in refused.value.rpc_message
    assert is_range_refusal(refused.value)
    assert scanner.block_range <= 600
    assert len(result.approvals) == 10  # chain 1's


async def test_max_logs_is_refused_like_infura() -> None:
    scenario = with_web3(load_scenario(None), max_logs=3)
    async with web3(scenario) as (_, rpc, _session):
        with pytest.raises(RpcError) as refused:
            await rpc.get_logs(from_block=0, to_block=5_000, topics=[None])
        _, result, _head = await scan_all(rpc, WALLETS, max_block_range=5_000)

    assert refused.value.code == -32005
    assert "query returned more than 3 results" in refused.value.rpc_message
    assert len(result.approvals) == 10  # chain 1's


async def test_the_api_key_is_required_when_the_scenario_sets_one() -> None:
    scenario = dataclasses.replace(load_scenario(None), api_key="sim-key")
    async with web3(scenario) as (_, rpc, _session):
        with pytest.raises(Rejected) as refused:
            await rpc.block_number()
    async with web3(
        scenario, headers={"Authorization": "Bearer sim-key"}, path="/web3/1/archive"
    ) as (_, keyed, _session):
        assert await keyed.block_number() == scenario.web3.start_head

    assert refused.value.status == 401
    assert "sim-key" not in str(refused.value)


async def test_the_rate_limit_and_faults_apply_to_json_rpc() -> None:
    scenario = dataclasses.replace(load_scenario(None), requests_per_second=2)
    async with run_simulator(scenario) as simulator, aiohttp.ClientSession() as session:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        statuses = []
        for _ in range(3):
            async with session.post(simulator.base_url + "/web3/1", json=body) as response:
                statuses.append(response.status)
    assert statuses == [200, 200, 429]

    async with web3(load_scenario(None)) as (simulator, rpc, _session):
        simulator.add_fault(Fault(endpoint="any", chain_id=1, status=503, count=2))
        assert await rpc.chain_id() == 1  # retried through two 503s
        simulator.add_fault(Fault(endpoint="any", status=429, count=5))
        with pytest.raises(RateLimited):
            await rpc.chain_id()
        assert [r.status for r in simulator.requests][:3] == [503, 503, 200]

    # A fault for the Web3 RPC API alone leaves the Balance API answering.
    async with web3(load_scenario(None)) as (simulator, rpc, session):
        simulator.add_fault(Fault(endpoint="balances", status=500, count=1))
        simulator.add_fault(Fault(endpoint="web3", status=503, count=1))
        assert await rpc.chain_id() == 1
        assert [r.status for r in simulator.requests][:2] == [503, 200]


async def test_batches_answer_in_order_and_a_refusing_node_gets_single_calls() -> None:
    async with web3(load_scenario(None)) as (_, rpc, session):
        results = await rpc.batch(
            [
                ("eth_chainId", []),
                ("eth_getBlockByNumber", ["0x10", False]),
                ("eth_noSuchMethod", []),
                ("eth_getBlockByNumber", ["0x1000000", False]),
            ]
        )
        assert rpc.batches_supported is True
        url = str(rpc.endpoint.url)
        async with session.post(url, data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == -32700
    assert results[0] == "0x1"
    block = results[1]
    assert isinstance(block, dict) and block["number"] == "0x10"
    assert isinstance(results[2], RpcError) and results[2].code == -32601
    assert results[3] is None

    scenario = with_web3(load_scenario(None), batches=False)
    async with web3(scenario) as (_, rpc, _session):
        answers = await rpc.batch([("eth_chainId", []), ("net_version", [])])
        assert rpc.batches_supported is False
        reads = await LiveReader(rpc).read(
            block=scenario.web3.start_head,
            allowances=[(OPS.lower(), USDC, FURUCOMBO.lower())],
            balances=[(OPS.lower(), USDC)],
            natives=[OPS.lower()],
        )
    assert answers == ["0x1", "1"]
    assert reads.allowances[(OPS.lower(), USDC, FURUCOMBO.lower())] == UINT256_MAX
    assert reads.balances[(OPS.lower(), USDC)] == 3_000 * 10**6


async def test_blocks_are_dated_in_order_and_the_future_is_not_served() -> None:
    async with web3(load_scenario(None)) as (_, rpc, _session):
        head = await rpc.block_number()
        times = [await rpc.block_timestamp(n) for n in (1, head - 1, head)]
        head = await rpc.block_number()
        later = [await rpc.block_timestamp(n) for n in (head - 24, head)]
        with pytest.raises(RpcError, match="header not found"):
            await rpc.call(USDC, b"\x18\x16\x0d\xdd", block=head + 1)
        assert await rpc.get_code(PHISHER) == b""
        assert await rpc.get_balance(COLD, block=head) == 500 * 10**18
        assert await rpc.call(PHISHER, b"\x18\x16\x0d\xdd") == b""
        with pytest.raises(RpcError, match="execution reverted"):
            await rpc.call(USDC, b"\xde\xad\xbe\xef")

    assert times[0] < times[1] < times[2]
    assert times[2] - times[1] == 12
    assert times[2] <= later[0] <= later[1]


def test_monitor_config_with_discovery_covers_every_chain_from_the_first_block() -> None:
    scenario = dataclasses.replace(
        load_scenario(None), web3=Web3Spec(first_block=1_000, history_blocks=500)
    )
    config = scenario.monitor_config("http://127.0.0.1:8900", discovery=True)
    chains = config["chains"]
    assert isinstance(chains, list)
    assert [c["discovery"] for c in chains] == [{"start_block": 1_000}] * 2
    assert BANCOR not in str(config).lower()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"web3": {"max_block_range": 0}}, "web3.max_block_range: must be an integer >= 1"),
        ({"web3": {"history_blocks": 10}}, "web3.history_blocks: must be an integer"),
        ({"web3": {"no_code": ["0xbad"]}}, "web3.no_code[0]:"),
        ({"web3": {"blocks": 1}}, "web3.blocks: unknown key"),
        ({"allowances_approved": 10}, "allowances[0].approved: must be at least amount"),
    ],
)
def test_scenario_web3_settings_are_checked(change: dict[str, Any], error: str) -> None:
    wallet, spender, token = "0x" + "a1" * 20, "0x" + "5e" * 20, "0x" + "70" * 20
    document: dict[str, Any] = {
        "chains": [{"id": 1, "tokens": [{"address": token, "symbol": "T", "decimals": 6}]}],
        "wallets": [{"address": wallet}],
        "allowances": [
            {"chain": 1, "wallet": wallet, "token": token, "spender": spender, "amount": 50}
        ],
    }
    if "allowances_approved" in change:
        document["allowances"][0]["approved"] = change.pop("allowances_approved")
    document.update(change)
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_scenario(document)


# -- the same scenario on anvil -------------------------------------------------------------------

anvil = anvil_fixture()


async def test_the_reader_sees_the_same_on_the_simulator_as_on_anvil(anvil: Anvil) -> None:
    wallet, spender, recipient = anvil.accounts[:3]
    revoked = "0x" + "3e" * 20
    token = anvil.deploy("TestToken", "Test Token", "TST", 18)
    anvil.send(wallet, token, "mint(address,uint256)", wallet, 1_000 * 10**18)
    anvil.place_multicall3()
    anvil.send(wallet, token, "approve(address,uint256)", spender, 100 * 10**18)
    anvil.send(
        spender, token, "transferFrom(address,address,uint256)", wallet, recipient, 30 * 10**18
    )
    anvil.send(wallet, token, "approve(address,uint256)", recipient, UINT256_MAX)
    anvil.send(wallet, token, "approve(address,uint256)", revoked, 50)
    anvil.mine(20)
    scenario = parse_scenario(
        {
            "chains": [
                {
                    "id": 1,
                    "tokens": [
                        {"address": token, "symbol": "TST", "name": "Test Token", "decimals": 18}
                    ],
                }
            ],
            "wallets": [{"address": wallet}],
            "balances": [
                {"chain": 1, "wallet": wallet, "token": token, "amount": 970 * 10**18},
                {
                    "chain": 1,
                    "wallet": wallet,
                    "token": "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
                    "amount": anvil.balance(wallet),
                },
            ],
            "allowances": [
                {
                    "chain": 1,
                    "wallet": wallet,
                    "token": token,
                    "spender": spender,
                    "amount": 70 * 10**18,
                    "approved": 100 * 10**18,
                },
                {
                    "chain": 1,
                    "wallet": wallet,
                    "token": token,
                    "spender": recipient,
                    "amount": "max",
                },
                {"chain": 1, "wallet": wallet, "token": token, "spender": revoked, "amount": 50},
            ],
            "timeline": [
                {
                    "at_poll": 2,
                    "set_allowance": {
                        "chain": 1,
                        "wallet": wallet,
                        "token": token,
                        "spender": revoked,
                        "amount": 0,
                    },
                }
            ],
            "web3": {"history_blocks": 200, "no_code": [spender, recipient, revoked]},
        }
    )

    async def observe(rpc: ChainRpc, *, steps: int) -> tuple[object, ...]:
        for _ in range(steps):
            head = await rpc.block_number()
        scanner = ApprovalScanner(rpc, chain_id=1, max_block_range=64)
        result = await scanner.scan({wallet: 0}, to_block=head - 12)
        reader = LiveReader(rpc)
        pairs = sorted({(a.owner, a.token, a.spender) for a in result.approvals})
        reads = await reader.read(
            block=head, allowances=pairs, balances=[(wallet, token)], natives=[wallet]
        )
        return (
            [(a.owner, a.token, a.spender, a.value) for a in result.approvals],
            reads.allowances,
            reads.balances,
            reads.natives,
            reads.unreadable,
            await reader.token_metadata([token], block=head),
            await reader.has_code([token, spender, recipient, revoked], block=head),
            await reader.multicall_available(block=head),
        )

    async with aiohttp.ClientSession() as session:
        node_rpc = ChainRpc(
            session,
            RpcEndpoint(chain_id=1, url=anvil.url, origin="anvil"),
            limiter=RateLimiter(1000),
        )
        before_revoke = await observe(node_rpc, steps=1)
        wei = anvil.balance(wallet)
        anvil.send(wallet, token, "approve(address,uint256)", revoked, 0)
        anvil.set_balance(wallet, wei)  # the gas of the revoke, which the scenario has not
        anvil.mine(20)
        on_anvil = await observe(node_rpc, steps=1)
    async with web3(scenario) as (_, sim_rpc, _session):
        assert await observe(sim_rpc, steps=1) == before_revoke
        on_simulator = await observe(sim_rpc, steps=1)

    assert on_simulator == on_anvil
    approvals = on_anvil[0]
    assert isinstance(approvals, list) and approvals[-1] == (wallet, token, revoked, 0)
