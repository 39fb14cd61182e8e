"""``python -m benchmarks --workload discovery``: discovery at scale, each figure beside its
floor from the same run, with the budgets of the discovery issue checked.

A generated world (1,000 wallets each approving 10 tokens to 2 spenders: 20,000 pairs) is
laid out over 100,000 blocks of history by the simulator's Web3 RPC API, which refuses an
``eth_getLogs`` over more than 2,000 blocks with Alchemy's error text and serves at most R
requests a second (every route together). The monitor's config names no spender: discovery
on chain 1 finds every approval from the logs. Its RPC endpoint is the simulator's
``/web3/1``, by the no-key rule (a non-1inch ``api.base_url`` and no key), so the chain
reader shares the client's limiter at ``api.requests_per_second`` = R with the Spot Price API.

A measuring process (``benchmarks.discovery_worker``) runs the product's ``Monitor`` as the
daemon wires it: a first poll (the first scan, the token metadata, every pair read), then
steady polls (a new step of 25 blocks with no approval in it: a scan of them and every pair
read again).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.databases import Databases
from benchmarks.machine import describe_code, describe_machine, load_average
from benchmarks.processes import ROOT, simulator
from benchmarks.summary import Row
from benchmarks.workloads import SEED
from monitor.chain.endpoints import ENV_PREFIX as ENDPOINT_ENV
from monitor.config.model import RpcSettings

MIB = 2**20 / 10**6  # MiB -> MB
GET_LOGS_RATIO = 1.05
SCAN_WALL_RATIO = 1.05
ETH_CALL_BUDGET = 50
STEADY_CPU_RATIO = 2.0
PEAK_RSS_MB = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryWorkload:
    """A generated world whose every (wallet, token, spender) is approved once, in a history
    of ``history_blocks`` blocks, served at ``rate_per_s``."""

    name: str
    wallets: int
    tokens: int
    spenders: int
    history_blocks: int
    max_block_range: int
    rate_per_s: int
    steady_polls: int = 2
    blocks_per_step: int = 25

    @property
    def pairs(self) -> int:
        return self.wallets * self.tokens * self.spenders

    @property
    def holdings(self) -> int:
        return self.wallets * self.tokens

    def scenario(self, rate: int) -> dict[str, Any]:
        """The simulator scenario document (generated mode, no churn)."""
        return {
            "description": f"benchmark workload {self.name}",
            "generate": {
                "seed": SEED,
                "chains": [1],
                "wallets": self.wallets,
                "tokens": self.tokens,
                "spenders": self.spenders,
                "nonzero_fraction": 1.0,
                "unlimited_fraction": 0.2,
            },
            "requests_per_second": rate,
            "web3": {
                "first_block": 0,
                "history_blocks": self.history_blocks,
                "blocks_per_step": self.blocks_per_step,
                "max_block_range": self.max_block_range,
            },
        }

    def describe(self) -> str:
        return (
            f"{self.wallets:,} wallets x {self.tokens} tokens x {self.spenders} spenders "
            f"({self.pairs:,} approvals) over {self.history_blocks:,} blocks, eth_getLogs "
            f"refused over {self.max_block_range:,} blocks"
        )


DISCOVERY = DiscoveryWorkload(
    name="discovery",
    wallets=1_000,
    tokens=10,
    spenders=2,
    history_blocks=100_000,
    max_block_range=2_000,
    rate_per_s=20,
)
"""The issue's workload: 1,000 wallets x 20 approvals (10 tokens x 2 spenders)."""

DISCOVERY_SMALL = DiscoveryWorkload(
    name="discovery-small",
    wallets=20,
    tokens=2,
    spenders=2,
    history_blocks=3_000,
    max_block_range=500,
    rate_per_s=200,
    steady_polls=1,
)
"""The smoke run: the same path at a size that runs in seconds."""


def monitor_config(
    base: dict[str, Any], *, db_url: str, rate: int, rpc: dict[str, int]
) -> dict[str, Any]:
    """The simulator's ``--print-config`` document with discovery on and no spender named,
    the rate R for the client (and so for the Web3 RPC API it shares), and ``rpc`` settings
    given on the command line (the product's defaults otherwise)."""
    chains = [
        {key: value for key, value in chain.items() if key != "spenders"}
        for chain in base["chains"]
    ]
    return {
        **base,
        "api": {**base["api"], "requests_per_second": rate},
        "chains": chains,
        "rpc": {"requests_per_second": rate, **rpc},
        "database": {"url": db_url, "migrate_on_start": True},
        "poll": {"interval_s": 3600, "timeout_s": 3600, "jitter_s": 0},
    }


def rpc_overrides(items: list[str] | None) -> dict[str, int]:
    """``--rpc KEY=VALUE`` (integers) into ``rpc:`` settings."""
    known = set(RpcSettings.__dataclass_fields__) - {"requests_per_second"}
    settings: dict[str, int] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or key not in known or not value.isdigit():
            raise SystemExit(
                f"--rpc {item!r}: expected KEY=INTEGER with KEY one of {', '.join(sorted(known))}"
            )
        settings[key] = int(value)
    return settings


def _run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """``python -m benchmarks.discovery_worker`` in a fresh process with ``spec`` on stdin;
    the JSON it prints. Its progress goes to our stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.discovery_worker"],
        input=json.dumps(spec),
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # The endpoint is the simulator's, by the no-key rule: nothing from the caller's
        # environment may name another one.
        env={
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(ENDPOINT_ENV)
                and k not in ("ONEINCH_API_KEY", "CREDENTIALS_DIRECTORY")
            },
            "PYTHONHASHSEED": "0",
        },
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"discovery worker failed (exit {proc.returncode}); see above")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def run(args: argparse.Namespace, workload: DiscoveryWorkload) -> dict[str, Any]:
    """The simulator and the measuring process; the results as a JSON-able dict."""
    rate = args.rate if args.rate is not None else workload.rate_per_s
    rpc = rpc_overrides(args.rpc)
    backend = "sqlite" if args.backend == "both" else args.backend
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="exposure-monitor-bench-") as tmp:
        folder = Path(tmp)
        databases = Databases(folder, args.postgres)
        machine = describe_machine(databases if backend == "postgresql" else None)
        for line in report.describe(machine, describe_code()):
            print(line, file=sys.stderr, flush=True)
        print(
            f"{workload.name} / {backend}: {workload.describe()}; {rate} requests/s",
            file=sys.stderr,
            flush=True,
        )
        try:
            database = databases.new(backend, workload.name.replace("-", "_"))
            with simulator(workload.scenario(rate), folder / f"{workload.name}.yaml") as sim:
                config = monitor_config(
                    sim.monitor_config(), db_url=database.url, rate=rate, rpc=rpc
                )
                worker = _run_worker(
                    {
                        "config": config,
                        "base_url": sim.base_url,
                        "polls": ["first"] + ["steady"] * workload.steady_polls,
                        "pairs": workload.pairs,
                        "holdings": workload.holdings,
                        "wallets": workload.wallets,
                        "profile_dir": str(args.profile) if args.profile else None,
                    },
                )
                sim_state = sim.state()
        finally:
            databases.drop_all()
    effective = RpcSettings(**rpc)
    return {
        "machine": machine,
        "code": describe_code(),
        "workload": {
            "name": workload.name,
            "describe": workload.describe(),
            "wallets": workload.wallets,
            "pairs": workload.pairs,
            "holdings": workload.holdings,
            "tokens": workload.tokens,
            "history_blocks": workload.history_blocks,
            "max_block_range": workload.max_block_range,
        },
        "backend": backend,
        "rate_per_s": rate,
        "rpc": {
            "max_block_range": effective.max_block_range,
            "wallets_per_query": effective.wallets_per_query,
            "calls_per_multicall": effective.calls_per_multicall,
            "max_batch_size": effective.max_batch_size,
        },
        "worker": worker,
        "simulator": {
            "requests": sim_state["requests"],
            "responses_by_status": sim_state["responses_by_status"],
        },
        "profiled": args.profile is not None,
        "elapsed_s": time.monotonic() - started,
        "load_at_end": load_average(),
    }


# -- the table -------------------------------------------------------------------------------------


def _s(value: float) -> str:
    return (
        f"{value:.1f} s" if value >= 10 else f"{value:.2f} s" if value >= 0.1 else f"{value:.3f} s"
    )


def get_logs_floor(results: dict[str, Any]) -> tuple[int, int]:
    """(blocks scanned, the fewest ``eth_getLogs`` that cover them): blocks / largest range
    accepted, rounded up, times wallets / wallets per query, rounded up."""
    workload, rpc = results["workload"], results["rpc"]
    first = results["worker"]["polls"][0]
    blocks = (first["scanned_to"] or 0) + 1  # from block 0
    per_range = math.ceil(blocks / workload["max_block_range"])
    return blocks, per_range * math.ceil(workload["wallets"] / rpc["wallets_per_query"])


def rows(results: dict[str, Any]) -> list[Row]:
    """The figures of the discovery issue, each beside its floor, with PASS or FAIL."""
    worker, workload, rpc = results["worker"], results["workload"], results["rpc"]
    rate = results["rate_per_s"]
    polls = worker["polls"]
    first = polls[0]
    steady = [p for p in polls if p["kind"] == "steady"]
    blocks, floor_logs = get_logs_floor(results)
    get_logs = first["calls"].get("eth_getLogs", 0)
    floor_wall = floor_logs / rate
    scan_wall = first["scan_wall_s"] or 0.0
    timestamps = first["calls"].get("eth_getBlockByNumber", 0)
    out = [
        Row(
            figure="first scan: eth_getLogs requests",
            measured=f"{get_logs:,} ({get_logs / floor_logs:.2f}x) for {blocks:,} blocks",
            floor=f"{floor_logs:,} = ceil({blocks:,} / {workload['max_block_range']:,}) x "
            f"ceil({workload['wallets']:,} / {rpc['wallets_per_query']})",
            budget=f"<= {GET_LOGS_RATIO:g}x floor = {math.floor(GET_LOGS_RATIO * floor_logs):,}",
            ok=get_logs <= GET_LOGS_RATIO * floor_logs,
        ),
        Row(
            figure="first scan: wall time",
            measured=f"{_s(scan_wall)} ({scan_wall / floor_wall:.2f}x; first eth_getLogs to "
            f"last scan answer; {first['http_requests']:,} RPC requests in the poll, "
            f"{timestamps:,} eth_getBlockByNumber)",
            floor=f"{_s(floor_wall)} = {floor_logs:,} requests / {rate:g} per s",
            budget=f"<= {SCAN_WALL_RATIO:g}x floor = {_s(SCAN_WALL_RATIO * floor_wall)}",
            ok=scan_wall <= SCAN_WALL_RATIO * floor_wall,
        ),
    ]
    if steady:
        worst = max(steady, key=lambda p: p["answered"].get("eth_call", 0))
        calls = worst["answered"].get("eth_call", 0)
        sent = worst["calls"].get("eth_call", 0)
        reads = workload["pairs"] + workload["holdings"] + workload["wallets"]
        per = rpc["calls_per_multicall"]
        out.append(
            Row(
                figure="steady poll: eth_call",
                measured=f"{calls:,} answered, {sent:,} sent (refused requests too) "
                f"in {worst['http_requests']} RPC requests; worst of {len(steady)} polls",
                floor=f"{reads:,} reads ({workload['pairs']:,} allowances, "
                f"{workload['holdings']:,} balances, {workload['wallets']:,} native) / "
                f"{per} calls a multicall = {math.ceil(reads / per)}",
                budget=f"<= {ETH_CALL_BUDGET}",
                ok=calls <= ETH_CALL_BUDGET,
            )
        )
        cpu = sorted(p["cpu_s"] for p in steady)[len(steady) // 2]
        floor_cpu = sorted(p["floor_cpu_s"] for p in steady)[len(steady) // 2]
        out.append(
            Row(
                figure="steady poll: CPU",
                measured=f"{_s(cpu)} ({cpu / floor_cpu:.1f}x; median of {len(steady)})",
                floor=f"{_s(floor_cpu)}: the answers decoded (orjson, ABI sliced by hand), "
                f"{steady[-1]['floor_values']:,} values compared in a dict",
                budget=f"<= {STEADY_CPU_RATIO:g}x floor = {_s(STEADY_CPU_RATIO * floor_cpu)}",
                ok=cpu <= STEADY_CPU_RATIO * floor_cpu,
            )
        )
    peak = max(p["peak_mib"] for p in polls) * MIB
    floor_rss = (worker["rss_at_start_mib"] + worker["floor_memory_mib"]) * MIB
    out.append(
        Row(
            figure="peak RSS",
            measured=f"{peak:,.0f} MB (every poll of the monitor's process)",
            floor=f"{floor_rss:,.0f} MB = process at start + the values read as dicts",
            budget=f"< {PEAK_RSS_MB:.0f} MB",
            ok=peak < PEAK_RSS_MB,
        )
    )
    limited = results["simulator"]["responses_by_status"].get("429", 0)
    out.append(
        Row(
            figure="429 answers",
            measured=f"{limited} of {results['simulator']['requests']:,} requests (the whole run)",
            floor="0",
            budget="0",
            ok=limited == 0,
        )
    )
    return out


def render(results: dict[str, Any]) -> tuple[list[str], bool]:
    """The summary table, the polls in detail, and whether any budget failed."""
    workload, rpc = results["workload"], results["rpc"]
    lines = [
        *report.describe(results["machine"], results["code"]),
        f"load average at end: {results['load_at_end']}; run took {results['elapsed_s']:.0f} s",
        "",
        f"Summary: discovery, {workload['describe']}, at R = {results['rate_per_s']:g} "
        f"requests/s, on {results['backend']} (rpc: max_block_range "
        f"{rpc['max_block_range']:,}, wallets_per_query {rpc['wallets_per_query']}, "
        f"calls_per_multicall {rpc['calls_per_multicall']}, max_batch_size "
        f"{rpc['max_batch_size']})",
        "",
    ]
    table = rows(results)
    lines += report._table(
        ["figure", "measured", "floor (this run)", "budget", "verdict"],
        [[r.figure, r.measured, r.floor, r.budget, r.verdict] for r in table],
        left=5,
    )
    failed = [r for r in table if r.ok is False]
    lines += [
        "",
        f"budgets met: {len(table) - len(failed)} of {len(table)}"
        + (f"; missed: {', '.join(r.figure for r in failed)}" if failed else ""),
        "",
        "Polls:",
        "",
    ]
    polls = results["worker"]["polls"]
    lines += report._table(
        [
            "poll",
            "CPU",
            "wall",
            "RPC requests",
            "answers by status",
            "eth_getLogs",
            "eth_getBlockByNumber",
            "eth_call sent",
            "eth_call answered",
            "pairs",
            "unreadable",
            "peak RSS",
        ],
        [
            [
                f"{p['index'] + 1} ({p['kind']})",
                _s(p["cpu_s"]),
                _s(p["wall_s"]),
                f"{p['http_requests']:,}",
                " ".join(f"{k}: {v}" for k, v in sorted(p["responses_by_status"].items()) if v),
                f"{p['calls'].get('eth_getLogs', 0):,}",
                f"{p['calls'].get('eth_getBlockByNumber', 0):,}",
                f"{p['calls'].get('eth_call', 0):,}",
                f"{p['answered'].get('eth_call', 0):,}",
                f"{p['pairs'] or 0:,}",
                f"{p['unreadable'] or 0:,}",
                f"{p['peak_mib'] * MIB:,.0f} MB",
            ]
            for p in polls
        ],
        left=1,
    )
    errors = [p["last_error"] for p in polls if p.get("last_error")]
    if errors:
        lines += ["", "discovery errors: " + "; ".join(errors)]
    return lines, bool(failed)
