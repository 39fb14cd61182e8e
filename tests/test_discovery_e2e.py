"""Discovery end to end (issue 13): the real CLI, as subprocesses, against a real anvil behind
a recording JSON-RPC proxy (``tests/rpc_proxy.py``), with no 1inch key and no spenders in the
config: approvals found in the logs, read live, turned into findings, followed from poll to
poll without rescanning, and never with the RPC URL's secret parts in any output or table.

Every expectation is an exact value: what the test did on the chain, checked against anvil's
own ``eth_call`` answers, then against what the CLI prints.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import APPROVAL_TOPIC0, MULTICALL3_ADDRESS, UINT256_MAX, Anvil, calldata
from tests.rpc_proxy import ALCHEMY_REFUSAL, INFURA_REFUSAL, Refusal, RpcProxy

pytestmark = pytest.mark.slow  # real processes: anvil, the proxy, one CLI run per command

ROOT = Path(__file__).resolve().parent.parent
FURUCOMBO = "0x17e8ca1b4798b97602895f63206afcd1fc90ca5f"
"""On the bundled exploit list (Furucombo, 2021-02-27); no code on a fresh anvil."""
NATIVE = "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
AGGREGATE3_SELECTOR = "0x82ad56cb"
PATH_SECRET = "pathsecret"
QUERY_SECRET = "s3cr3tkey"
SECRET_SUFFIX = f"/v3/{PATH_SECRET}?apikey={QUERY_SECRET}"

FAST: dict[str, float] = {"requests_per_second": 1000}
"""The default 10 requests a second makes each poll seconds long; the Done-when test keeps it."""

Key = tuple[str, str, str]
"""(wallet, token, spender) of a row of ``once --format json``."""


# -- the CLI against one config -----------------------------------------------------------------


@dataclass
class Cli:
    """``exposure-monitor`` run as a subprocess with a config of its own and the RPC endpoint
    in the environment (``EXPOSURE_MONITOR_RPC_URL_1``), no 1inch key. Keeps every output."""

    workdir: Path
    rpc_url: str
    log_level: str | None = None
    outputs: list[str] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def database(self) -> Path:
        return self.workdir / "monitor.sqlite"

    def configure(
        self,
        wallets: Sequence[str],
        *,
        confirmations: int,
        start_block: int | None = None,
        rpc: dict[str, float] | None = None,
    ) -> None:
        discovery = f"confirmations: {confirmations}"
        if start_block is not None:
            discovery += f", start_block: {start_block}"
        lines = ["chains:", "  - id: 1", f"    discovery: {{{discovery}}}", "wallets:"]
        lines += [f'  - address: "{wallet}"' for wallet in wallets]
        lines += ["database:", f"  url: sqlite+aiosqlite:///{self.database}"]
        if rpc:
            lines += ["rpc:"] + [f"  {name}: {value}" for name, value in rpc.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def run(self, command: str, *args: str, expect_rc: int = 0) -> str:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("EXPOSURE_MONITOR_")
            and name not in {"ONEINCH_API_KEY", "CREDENTIALS_DIRECTORY"}
        }
        env["EXPOSURE_MONITOR_RPC_URL_1"] = self.rpc_url
        level = ["--log-level", self.log_level] if self.log_level else []
        argv = [sys.executable, "-m", "monitor", *level, command, "--config", str(self.config)]
        done = subprocess.run(
            [*argv, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=50
        )
        self.outputs += [done.stdout, done.stderr]
        assert done.returncode == expect_rc, (
            f"{command} {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
        return done.stdout

    def once(self) -> dict[Key, dict[str, Any]]:
        """``once --format json``: every row by (wallet, token, spender)."""
        rows: dict[Key, dict[str, Any]] = {}
        for line in self.run("once", "--format", "json").splitlines():
            row = json.loads(line)
            key = (row["wallet"], row["token"], row["spender"])
            assert key not in rows, f"row listed twice: {key}"
            rows[key] = row
        return rows

    def findings(self) -> set[tuple[str, str, str, str]]:
        """Open findings as (rule, wallet, spender, token)."""
        lines = self.run("findings", "--format", "json").splitlines()
        return {(f["rule"], f["wallet"], f["spender"], f["token"]) for f in map(json.loads, lines)}

    def history(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.run("history", "--format", "json").splitlines()]


@pytest.fixture
def node() -> Iterator[Anvil]:
    with Anvil() as started:
        yield started


@pytest.fixture
def proxy(node: Anvil) -> Iterator[RpcProxy]:
    with RpcProxy(node.url) as started:
        yield started


@pytest.fixture
def cli(tmp_path: Path, proxy: RpcProxy) -> Cli:
    return Cli(workdir=tmp_path, rpc_url=proxy.url + SECRET_SUFFIX)


# -- what the chain says -------------------------------------------------------------------------


def allowance(node: Anvil, wallet: str, token: str, spender: str) -> int:
    (value,) = node.call(token, "allowance(address,address)", wallet, spender, returns=["uint256"])
    return int(value)


def balance_of(node: Anvil, wallet: str, token: str) -> int:
    (value,) = node.call(token, "balanceOf(address)", wallet, returns=["uint256"])
    return int(value)


def expect_live(node: Anvil, expected: dict[Key, tuple[int, int]]) -> None:
    """The test's own bookkeeping, (allowance, balance) per pair, is what anvil answers."""
    answered = {
        (w, t, s): (allowance(node, w, t, s), balance_of(node, w, t)) for w, t, s in expected
    }
    assert answered == expected


def amounts(rows: dict[Key, dict[str, Any]]) -> dict[Key, tuple[int, int]]:
    """ERC-20 rows as (allowance, balance), exact ints from the JSON strings."""
    return {
        key: (int(row["allowance"]), int(row["balance"]))
        for key, row in rows.items()
        if not row["native"]
    }


def natives(rows: dict[Key, dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(w, s): int(row["balance"]) for (w, _t, s), row in rows.items() if row["native"]}


def expected_natives(node: Anvil, pairs: Iterable[Key]) -> dict[tuple[str, str], int]:
    """One native row per (wallet, spender) read, with the wallet's balance at the head."""
    return {(w, s): node.balance(w) for w, _t, s in pairs}


def approve(node: Anvil, wallet: str, token: str, spender: str, amount: int) -> int:
    """``wallet`` approves ``spender`` for ``amount`` of ``token``; the block it landed in."""
    receipt = node.send(wallet, token, "approve(address,uint256)", spender, amount)
    return int(receipt["blockNumber"], 16)


def secrets_in(text: str) -> list[str]:
    return [part for part in (PATH_SECRET, QUERY_SECRET, "apikey", "/v3/") if part in text]


def database_dump(path: Path) -> str:
    """Every table's rows, as SQL, plus the raw bytes of the file and its WAL/journal."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        dump = "\n".join(connection.iterdump())
    finally:
        connection.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file()).decode(
        "latin-1"
    )
    # The dump holds the discovery tables too, so grepping it covers what discovery stored.
    assert {"discovery_cursors", "discovered_approvals", "findings", "polls"} <= set(tables)
    return dump + "\n" + raw


def discovered_pairs(path: Path) -> set[Key]:
    """The (wallet, token, spender) pairs discovery stored from ``Approval`` logs."""
    connection = sqlite3.connect(path)
    try:
        # Addresses are stored as their 20 bytes (README, "How values are stored").
        rows = connection.execute(
            "SELECT '0x' || lower(hex(wallet)), '0x' || lower(hex(token)), "
            "'0x' || lower(hex(spender)) FROM discovered_approvals"
        )
        return {(w.lower(), t.lower(), s.lower()) for w, t, s in rows}
    finally:
        connection.close()


# -- 1. the "Done when" of issue 13 --------------------------------------------------------------


def test_key_free_discovery_over_3000_blocks_follows_a_revoke_and_a_grant_without_rescan_or_leak(
    tmp_path: Path,
) -> None:
    # --prune-history: anvil mines thousands of blocks twice as fast keeping no old states;
    # every read here is at the head, as the monitor's are.
    with Anvil(extra_args=["--prune-history"]) as node, RpcProxy(node.url) as proxy:
        cli = Cli(workdir=tmp_path, rpc_url=proxy.url + SECRET_SUFFIX)
        done_when_of_issue_13(node, proxy, cli)


def done_when_of_issue_13(node: Anvil, proxy: RpcProxy, cli: Cli) -> None:
    owner, alice, bob, stranger, plain, newcomer = node.accounts[:6]
    usd = node.deploy("TestToken", "Test USD", "TUSD", 6)
    wst = node.deploy("TestToken", "Wrapped Test", "WTST", 18)
    router = node.deploy("TestToken", "Router stand-in", "RTR", 18)  # a spender with code
    node.send(owner, usd, "mint(address,uint256)", alice, 5_000_000)
    node.send(owner, wst, "mint(address,uint256)", alice, 3 * 10**18)
    node.send(owner, wst, "mint(address,uint256)", bob, 10**18)
    approve(node, alice, usd, FURUCOMBO, UINT256_MAX)
    node.mine(700)
    approve(node, alice, usd, router, 2_500_000)
    node.mine(900)
    approve(node, bob, wst, plain, 4 * 10**17)
    approve(node, stranger, wst, plain, 10**18)  # not a watched wallet
    node.mine(800)
    approve(node, alice, wst, router, UINT256_MAX)
    node.mine(600)
    head = node.block_number()
    assert head > 3000
    confirmations = 5
    cli.log_level = "debug"
    cli.configure([alice, bob], confirmations=confirmations)

    check = cli.run("check")
    assert "key-free mode" in check
    assert f"through {proxy.url} (environment variable EXPOSURE_MONITOR_RPC_URL_1)" in check

    expected = {
        (alice, usd, FURUCOMBO): (UINT256_MAX, 5_000_000),
        (alice, usd, router): (2_500_000, 5_000_000),
        (alice, wst, router): (UINT256_MAX, 3 * 10**18),
        (bob, wst, plain): (4 * 10**17, 10**18),
    }
    expect_live(node, expected)
    proxy.clear()
    rows = cli.once()
    assert amounts(rows) == expected
    assert natives(rows) == expected_natives(node, expected)
    assert {row["source"] for row in rows.values()} == {"chain"}
    assert {(row["token"], row["symbol"], row["decimals"]) for row in rows.values()} == {
        (usd, "TUSD", 6),
        (wst, "WTST", 18),
        (NATIVE, "ETH", 18),
    }
    assert sorted(k for k, row in rows.items() if row["unlimited"]) == sorted(
        [(alice, usd, FURUCOMBO), (alice, wst, router)]
    )
    first_scan = proxy.log_queries()
    assert [(q.from_block, q.to_block) for q in first_scan] == [(0, head - confirmations)]
    assert {call.path_qs for call in proxy.snapshot()} == {SECRET_SUFFIX}  # the URL was used

    findings = cli.findings()
    critical = {f for f in findings if f[0] in {"exploited_spender", "eoa_spender"}}
    assert critical == {
        ("exploited_spender", alice, FURUCOMBO, usd),
        ("eoa_spender", alice, FURUCOMBO, usd),
        ("eoa_spender", bob, plain, wst),
    }

    # Between two polls: a revoke and a new grant, then enough blocks to confirm both.
    node.send(owner, usd, "mint(address,uint256)", bob, 700_000)
    approve(node, alice, usd, FURUCOMBO, 0)
    approve(node, bob, usd, newcomer, 123_456)
    node.mine(confirmations + 2)
    head2 = node.block_number()
    proxy.clear()
    rows = cli.once()

    after = {
        (alice, usd, FURUCOMBO): (0, 5_000_000),  # listed while the balance is not zero
        (alice, usd, router): (2_500_000, 5_000_000),
        (alice, wst, router): (UINT256_MAX, 3 * 10**18),
        (bob, wst, plain): (4 * 10**17, 10**18),
        (bob, usd, newcomer): (123_456, 700_000),
    }
    expect_live(node, after)
    assert amounts(rows) == after
    assert natives(rows) == expected_natives(node, after)
    second_scan = proxy.log_queries()
    assert [(q.from_block, q.to_block) for q in second_scan] == [
        (head - confirmations + 1, head2 - confirmations)
    ]

    changes = [c for c in cli.history() if c["poll_id"] == 2 and c["change"] != "balance_changed"]
    assert sorted(
        (c["change"], c["wallet"], c["token"], c["spender"], c["old"], c["new"]) for c in changes
    ) == [
        ("granted", bob, usd, newcomer, "0", "123456"),
        ("revoked", alice, usd, FURUCOMBO, str(UINT256_MAX), "0"),
    ]
    findings = cli.findings()
    critical = {f for f in findings if f[0] in {"exploited_spender", "eoa_spender"}}
    assert critical == {
        ("eoa_spender", bob, plain, wst),
        ("eoa_spender", bob, newcomer, usd),
    }

    leaks = [line for text in cli.outputs for line in text.splitlines() if secrets_in(line)]
    assert leaks == []
    assert any("DEBUG" in text for text in cli.outputs)  # debug logs were on
    assert secrets_in(database_dump(cli.database)) == []


# -- 2. unlimited, finite, and finite partly spent -----------------------------------------------


def test_a_finite_approval_partly_spent_by_transfer_from_shows_the_live_allowance_not_the_logged_one(
    node: Anvil, proxy: RpcProxy, cli: Cli
) -> None:
    owner, wallet, spender, other = node.accounts[:4]
    usd = node.deploy("TestToken", "Test USD", "TUSD", 6)
    node.send(owner, usd, "mint(address,uint256)", wallet, 5_000_000)
    approve(node, wallet, usd, FURUCOMBO, UINT256_MAX)
    logged_at = approve(node, wallet, usd, spender, 1_000_000)
    node.send(spender, usd, "transferFrom(address,address,uint256)", wallet, other, 300_000)
    node.mine(3)
    [log] = node.logs(from_block=logged_at, to_block=logged_at, address=usd)
    assert int(log["data"], 16) == 1_000_000  # the event's value; no Approval since
    cli.configure([wallet], confirmations=2, rpc=FAST)

    rows = cli.once()

    expected = {
        (wallet, usd, FURUCOMBO): (UINT256_MAX, 4_700_000),
        (wallet, usd, spender): (700_000, 4_700_000),
    }
    expect_live(node, expected)
    assert amounts(rows) == expected
    assert rows[(wallet, usd, FURUCOMBO)]["unlimited"] is True
    assert rows[(wallet, usd, spender)]["unlimited"] is False
    assert natives(rows) == expected_natives(node, expected)


# -- 3. what cannot be read is no position and no finding ----------------------------------------


def test_a_reverting_allowance_and_fake_approval_logs_are_neither_positions_nor_findings(
    node: Anvil, proxy: RpcProxy, cli: Cli
) -> None:
    owner, wallet, spender, phished, faker_target = node.accounts[:5]
    usd = node.deploy("TestToken", "Test USD", "TUSD", 6)
    broken = node.deploy("RevertingAllowanceToken", "Broken", "BRK", 18)
    emitter = node.deploy("FakeApprovalEmitter")
    node.send(owner, usd, "mint(address,uint256)", wallet, 5_000_000)
    node.send(owner, broken, "mint(address,uint256)", wallet, 10**18)
    approve(node, wallet, usd, spender, 42)
    approve(node, wallet, broken, phished, UINT256_MAX)  # logged, allowance() reverts
    node.send(owner, emitter, "emitApproval(address,address,uint256)", wallet, faker_target, 10**30)
    node.mine(3)
    planted = node.logs(address=[broken, emitter], topics=[APPROVAL_TOPIC0])
    assert [log["address"] for log in planted] == [broken, emitter]  # both Approval logs exist
    cli.configure([wallet], confirmations=2, rpc=FAST)

    rows = cli.once()  # exits 0: the poll succeeds

    assert discovered_pairs(cli.database) == {  # all three found in the logs
        (wallet, usd, spender),
        (wallet, broken, phished),
        (wallet, emitter, faker_target),
    }
    assert amounts(rows) == {(wallet, usd, spender): (42, 5_000_000)}
    assert natives(rows) == {(wallet, spender): node.balance(wallet)}
    findings = cli.findings()
    assert {(f[2], f[3]) for f in findings} == {(spender, usd)}
    named = {part for f in findings for part in f}
    assert not named & {broken, emitter, phished, faker_target, FURUCOMBO}


# -- 4. a reorg inside the confirmation window ---------------------------------------------------


def test_an_approval_dropped_by_a_reorg_inside_the_confirmation_window_leaves_nothing(
    node: Anvil, proxy: RpcProxy, cli: Cli
) -> None:
    owner, wallet, kept, phantom, replacement = node.accounts[:5]
    usd = node.deploy("TestToken", "Test USD", "TUSD", 6)
    node.send(owner, usd, "mint(address,uint256)", wallet, 5_000_000)
    approve(node, wallet, usd, kept, 11)
    node.mine(10)
    confirmations = 5
    phantom_block = approve(node, wallet, usd, phantom, UINT256_MAX)
    node.mine(2)
    assert node.block_number() - confirmations < phantom_block  # inside the window
    cli.configure([wallet], confirmations=confirmations, rpc=FAST)

    head1 = node.block_number()
    rows = cli.once()
    assert amounts(rows) == {(wallet, usd, kept): (11, 5_000_000)}
    assert max(q.to_block for q in proxy.log_queries()) < phantom_block

    # The phantom's block and the two after it are replaced; the new branch grants another.
    grant = {
        "from": wallet,
        "to": usd,
        "data": "0x" + calldata("approve(address,uint256)", replacement, 77).hex(),
    }
    node.reorg(3, [(grant, 0)])
    assert allowance(node, wallet, usd, phantom) == 0
    assert node.logs(from_block=phantom_block, address=usd)[0]["topics"][2].endswith(
        replacement[2:]
    )
    node.mine(confirmations + 1)
    proxy.clear()

    rows = cli.once()

    expected = {
        (wallet, usd, kept): (11, 5_000_000),
        (wallet, usd, replacement): (77, 5_000_000),
    }
    expect_live(node, expected)
    assert amounts(rows) == expected
    assert [(q.from_block, q.to_block) for q in proxy.log_queries()] == [
        (head1 - confirmations + 1, node.block_number() - confirmations)
    ]  # the window is scanned only now, on the new branch
    assert discovered_pairs(cli.database) == set(expected)
    assert not any(phantom in f for f in cli.findings())
    assert not any(row["spender"] == phantom for row in rows.values())


# -- 5. restart from the cursor; a wallet added later ---------------------------------------------


def test_a_restart_resumes_from_the_cursor_and_a_wallet_added_later_is_scanned_alone_from_start_block(
    node: Anvil, proxy: RpcProxy, cli: Cli
) -> None:
    owner, alice, bob, s1, s2, s3 = node.accounts[:6]
    usd = node.deploy("TestToken", "Test USD", "TUSD", 6)
    node.send(owner, usd, "mint(address,uint256)", alice, 1_000)
    node.send(owner, usd, "mint(address,uint256)", bob, 2_000)
    start_block = node.block_number() + 1
    approve(node, alice, usd, s1, 10)
    approve(node, bob, usd, s2, 20)
    node.mine(300)
    confirmations = 3
    cli.configure([alice], confirmations=confirmations, start_block=start_block, rpc=FAST)

    rows = cli.once()

    head1 = node.block_number()
    assert amounts(rows) == {(alice, usd, s1): (10, 1_000)}
    assert [(q.from_block, q.to_block, q.owners) for q in proxy.log_queries()] == [
        (start_block, head1 - confirmations, (alice,))
    ]
    cursor = head1 - confirmations + 1

    node.mine(50)
    approve(node, alice, usd, s3, 30)
    node.mine(10)
    head2 = node.block_number()
    cli.configure([alice, bob], confirmations=confirmations, start_block=start_block, rpc=FAST)
    proxy.clear()

    rows = cli.once()  # a new process: only the database remembers

    expected = {
        (alice, usd, s1): (10, 1_000),
        (alice, usd, s3): (30, 1_000),
        (bob, usd, s2): (20, 2_000),
    }
    expect_live(node, expected)
    assert amounts(rows) == expected
    queries = [(q.from_block, q.to_block, tuple(sorted(q.owners))) for q in proxy.log_queries()]
    assert queries == [
        (start_block, cursor - 1, (bob,)),
        (cursor, head2 - confirmations, tuple(sorted([alice, bob]))),
    ]

    proxy.clear()
    cli.once()  # nothing new confirmed: no eth_getLogs at all
    assert proxy.log_queries() == []


# -- 6. a provider refusing wide ranges ------------------------------------------------------------


@pytest.mark.parametrize("refusal", [ALCHEMY_REFUSAL, INFURA_REFUSAL], ids=lambda r: r.name)
def test_ranges_a_provider_refuses_are_halved_and_every_approval_is_still_found(
    node: Anvil, tmp_path: Path, refusal: Refusal
) -> None:
    owner, wallet = node.accounts[:2]
    spenders = node.accounts[2:8]
    usd = node.deploy("TestToken", "Test USD", "TUSD", 6)
    node.send(owner, usd, "mint(address,uint256)", wallet, 9_000)
    expected = {}
    for index, spender in enumerate(spenders):
        approve(node, wallet, usd, spender, 100 + index)
        expected[(wallet, usd, spender)] = (100 + index, 9_000)
        node.mine(120)
    confirmations = 2
    head = node.block_number()

    with RpcProxy(node.url, max_log_blocks=100, refusal=refusal) as proxy:
        cli = Cli(workdir=tmp_path, rpc_url=proxy.url + SECRET_SUFFIX)
        cli.configure([wallet], confirmations=confirmations, rpc=FAST)
        rows = cli.once()
        queries = proxy.log_queries()

    expect_live(node, expected)
    assert amounts(rows) == expected
    assert queries[0].refused and queries[0].blocks == head - confirmations + 1
    answered = [q for q in queries if not q.refused]
    assert all(q.blocks <= 100 for q in answered)
    assert len(answered) >= head // 100
    assert answered[0].from_block == 0
    assert answered[-1].to_block == head - confirmations
    assert all(b.from_block == a.to_block + 1 for a, b in itertools.pairwise(answered))


# -- 7. Multicall3 and its fallbacks give the same answers ------------------------------------------


def test_reads_through_multicall3_batched_calls_and_single_calls_agree(
    node: Anvil, tmp_path: Path
) -> None:
    owner, alice, bob, s1, s2 = node.accounts[:5]
    usd = node.deploy("TestToken", "Test USD", "TUSD", 6)
    wst = node.deploy("TestToken", "Wrapped Test", "WTST", 18)
    broken = node.deploy("RevertingAllowanceToken", "Broken", "BRK", 18)
    node.send(owner, usd, "mint(address,uint256)", alice, 5_000_000)
    node.send(owner, wst, "mint(address,uint256)", bob, 10**18)
    node.send(owner, broken, "mint(address,uint256)", alice, 10**18)
    approve(node, alice, usd, s1, UINT256_MAX)
    approve(node, alice, wst, s2, 5)  # no balance: still a position
    approve(node, bob, wst, s1, 6 * 10**17)
    approve(node, alice, broken, s2, 9)  # unreadable in every mode
    node.mine(5)
    expected = {
        (alice, usd, s1): (UINT256_MAX, 5_000_000),
        (alice, wst, s2): (5, 0),
        (bob, wst, s1): (6 * 10**17, 10**18),
    }
    expect_live(node, expected)

    def read(mode: str) -> tuple[dict[Key, dict[str, Any]], RpcProxy]:
        workdir = tmp_path / mode
        workdir.mkdir()
        with RpcProxy(node.url, refuse_batches=mode == "single calls") as proxy:
            cli = Cli(workdir=workdir, rpc_url=proxy.url)
            cli.configure([alice, bob], confirmations=2, rpc=FAST)
            return cli.once(), proxy

    batched, batched_proxy = read("batched eth_call")
    single, single_proxy = read("single calls")
    node.place_multicall3()
    aggregated, multicall_proxy = read("multicall")

    assert amounts(batched) == expected
    assert natives(batched) == expected_natives(node, expected)
    assert aggregated == batched
    assert single == batched

    aggregates = multicall_proxy.eth_calls_to(MULTICALL3_ADDRESS)
    assert aggregates
    assert all(c.params[0]["data"].startswith(AGGREGATE3_SELECTOR) for c in aggregates)
    direct = {c.params[0]["to"] for c in multicall_proxy.snapshot() if c.method == "eth_call"}
    assert direct == {MULTICALL3_ADDRESS}
    assert batched_proxy.eth_calls_to(MULTICALL3_ADDRESS) == []
    assert any(c.in_batch and c.method == "eth_call" for c in batched_proxy.snapshot())
    # Refused once, every call after it went alone.
    calls = single_proxy.snapshot()
    first_refused = next(i for i, c in enumerate(calls) if c.refused)
    assert all(not c.in_batch for c in calls[first_refused + 1 :] if not c.refused)
    assert single_proxy.eth_calls_to(MULTICALL3_ADDRESS) == []
    assert sum(c.method == "eth_call" and not c.in_batch for c in calls) >= 7
