"""``python -m benchmarks``: run the workloads, print the issue's summary table, the detailed
results and the budgets.

Every process of a run talks to 127.0.0.1 only: the simulators (``exposure-monitor
simulate``), the measuring workers (``python -m benchmarks.worker``), the daemon
(``exposure-monitor run``), ``exposure-monitor once``, and PostgreSQL when asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks import discovery, profiling, report, scrape
from benchmarks.databases import DEFAULT_POSTGRES, Database, Databases
from benchmarks.discovery import DISCOVERY, DISCOVERY_SMALL
from benchmarks.machine import describe_code, describe_machine, load_average
from benchmarks.processes import (
    ChildRun,
    Simulator,
    interpreter_start_cpu_s,
    peak_rss_mib,
    run_measured,
    run_worker,
    simulator,
)
from benchmarks.workloads import LARGE, SMALL, Workload

UNLIMITED_RATE = 10_000
"""``api.requests_per_second`` for the CPU runs: the client's limiter never waits."""
SMALL_DAEMON_RATE = 4
"""R for the daemon and ``once`` on the small portfolio (when it is the headline workload):
slow enough that its first poll (4 aggregated requests and the prices) lasts about a second,
so that /metrics is scraped during it."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="exposure-monitor benchmarks: CPU, writes, memory, scrape latency and API "
        "efficiency at scale, each beside its floor, with the budgets checked.",
    )
    parser.add_argument(
        "--workload",
        choices=("small", "large", "churn", "all", "discovery", "discovery-small"),
        default="all",
        help="small: 10 wallets x 20 tokens x 2 spenders x 2 chains; large: 2,000 x 50 x 3 on "
        "one chain (300,000 positions), with the scrape and API-efficiency runs; churn: the "
        "large one with 1%% of positions changing each poll; all (default): those three; "
        "discovery: 1,000 wallets x 20 approvals found in 100,000 blocks of logs through the "
        "Web3 RPC API (its own table); discovery-small: the same at smoke-test size",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        metavar="URL",
        help=f"server for the PostgreSQL runs (a role that may CREATE DATABASE; default "
        f"{DEFAULT_POSTGRES})",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=None,
        metavar="R",
        help=f"requests per second the simulator enforces for the large and churn workloads "
        f"(default {LARGE.rate_per_s}) and for discovery (default {DISCOVERY.rate_per_s}; "
        f"discovery-small {DISCOVERY_SMALL.rate_per_s}), the monitor's limiter set to the same",
    )
    parser.add_argument(
        "--rpc",
        action="append",
        metavar="KEY=VALUE",
        help="discovery only: an rpc: setting of the monitor's config (max_block_range, "
        "wallets_per_query, calls_per_multicall, max_batch_size, ...); default: the product's",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a budget is missed (default: 0)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample every steady-state poll with py-spy into DIR (collapsed stacks; timings "
        "of a profiled run are perturbed)",
    )
    args = parser.parse_args(argv)
    if args.rate is None and not args.workload.startswith("discovery"):
        args.rate = LARGE.rate_per_s
    return args


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _phase(
    name: str, sim: Simulator, polls: list[str], rate: float, *, first_as: str | None = None
) -> dict[str, Any]:
    """A phase of a worker: ``polls`` (their kinds) against ``sim``. ``first_as`` reports the
    first poll under another workload (the unchanged poll that opens a churn phase)."""
    labels = [name] * len(polls)
    if first_as is not None:
        labels[0] = first_as
    return {
        "name": name,
        "base_url": sim.base_url,
        "requests_per_second": rate,
        "polls": polls,
        "labels": labels,
    }


def _worker(
    database: Database,
    config: dict[str, Any],
    phases: list[dict[str, Any]],
    folder: Path,
    profile: Path | None,
    postgres_admin: str | None = None,
) -> dict[str, Any]:
    spec = {
        **database.spec(),
        "postgres_admin": postgres_admin,
        "config": config,
        "phases": phases,
        "spool_path": str(folder / "spool.bin"),
        "profile_dir": str(profile) if profile else None,
    }
    return run_worker(spec)


class Run:
    """One benchmark run: the workers' and the daemon's results as they come in."""

    def __init__(self, args: argparse.Namespace, folder: Path, databases: Databases) -> None:
        self.args = args
        self.folder = folder
        self.databases = databases
        self.workers: dict[str, dict[str, Any]] = {}
        self.scrape: dict[str, Any] | None = None
        self.once_runs: dict[str, Any] | None = None

    def small(self, backend: str, *, keep_copy: bool) -> Database | None:
        """The small portfolio, unlimited rate, in one process; returns a copy of the database
        as it stood after its unchanged polls, when asked."""
        log(f"small / {backend}")
        database = self.databases.new(backend, "small")
        copy = self.databases.reserve_copy(database, f"small_{backend}") if keep_copy else None
        with simulator(SMALL.scenario(churn=False), self.folder / "small.yaml") as sim:
            config = sim.monitor_config(discovery=False)
            with simulator(SMALL.scenario(churn=True), self.folder / "small-churn.yaml") as churn:
                phases = [
                    _phase(
                        "small",
                        sim,
                        ["initial"] + ["unchanged"] * SMALL.steady_polls,
                        UNLIMITED_RATE,
                    ),
                    _phase(
                        "small-churn",
                        churn,
                        ["unchanged"] + ["churn"] * SMALL.churn_polls,
                        UNLIMITED_RATE,
                        first_as="small",
                    ),
                ]
                if copy is not None:
                    phases[0]["copy_to"] = copy.url
                self.workers[f"small/{backend}"] = _worker(
                    database,
                    config,
                    phases,
                    self.folder,
                    self.args.profile,
                    self.databases.admin_url,
                )
        return copy

    def large(self, backend: str, *, steady: bool, churn: bool, keep_copy: bool) -> Database | None:
        """The large portfolio, served at ``--rate`` requests/s (CPU time does not count the
        waits; the wall time gives the API efficiency), in one process: a first poll and an
        unchanged poll; then a new client and ``Monitor`` (restored, as at a daemon's start)
        against the same portfolio served with churn, whose first answer is unchanged too,
        and the churn polls. Returns a copy of the database as it stood before the churn,
        when asked."""
        rate = self.args.rate
        database = self.databases.new(backend, "large")
        copy = self.databases.reserve_copy(database, f"steady_{backend}") if keep_copy else None
        log(f"large / {backend}: {LARGE.describe()}; {rate} requests/s")
        with contextlib.ExitStack() as stack:
            sim = stack.enter_context(
                simulator(LARGE.scenario(churn=False, rate=rate), self.folder / "large.yaml")
            )
            config = sim.monitor_config(discovery=False)
            first = ["initial"] + ["unchanged"] * (LARGE.steady_polls if steady else 0)
            phases = [_phase("large", sim, first, rate)]
            if copy is not None:
                phases[0]["copy_to"] = copy.url
            if churn:
                churning = stack.enter_context(
                    simulator(LARGE.scenario(churn=True, rate=rate), self.folder / "churn.yaml")
                )
                polls = ["unchanged"] + ["churn"] * LARGE.churn_polls
                phases.append(_phase("churn", churning, polls, rate, first_as="large"))
            self.workers[f"large/{backend}"] = _worker(
                database, config, phases, self.folder, self.args.profile, self.databases.admin_url
            )
        return copy

    def processes(self, database: Database, workload: Workload, rate: int) -> None:
        """The product as processes, on ``database`` (a copy of ``workload``'s database after
        its unchanged polls), against ``workload`` served unchanged at ``rate`` requests/s:
        ``exposure-monitor run`` from spawn to listening, with /metrics scraped during its
        first poll and then while idle; then ``exposure-monitor once`` twice, each a whole
        process on the unchanged portfolio."""
        scenario = workload.scenario(churn=False, rate=rate)
        with simulator(scenario, self.folder / f"{workload.name}-processes.yaml") as sim:
            config = sim.monitor_config(discovery=False)
            config["database"] = {"url": database.url}
            self.daemon(sim, config, database.backend, workload, rate)
            self.once(config, database.backend, workload, rate)

    def daemon(
        self,
        sim: Simulator,
        config: dict[str, Any],
        backend: str,
        workload: Workload,
        rate: int,
    ) -> None:
        """``exposure-monitor run``: /metrics scraped during its first poll (a full, unchanged
        poll of the portfolio) and after it."""
        interval_s = 3600  # one poll in this run
        log(
            f"daemon / {backend}: exposure-monitor run on the {workload.name} portfolio, "
            f"{rate} requests/s; /metrics scraped during a poll, then while idle"
        )
        config = {
            **config,
            "poll": {"interval_s": interval_s, "timeout_s": interval_s, "jitter_s": 0},
        }
        state_before = sim.state()
        with scrape.daemon(config, self.folder) as running:
            profiler = None
            if self.args.profile is not None:
                name = f"daemon-{backend}-poll1-scraped.txt"
                profiler = profiling.start(running.pid, self.args.profile / name)
            scraped = scrape.scrape_polls(
                running.host,
                running.port,
                polls=1,
                max_per_poll=300,
                idle_after=20,
                pause_s=0.05,
                timeout_s=60,
                deadline_s=600,
            )
            profiling.stop(profiler)
            daemon_peak = peak_rss_mib(running.pid)
        state_after = sim.state()
        daemon_log = running.log_path.read_text()
        statuses = {
            status: n - state_before["responses_by_status"].get(status, 0)
            for status, n in state_after["responses_by_status"].items()
        }
        self.scrape = {
            "backend": backend,
            "workload": workload.name,
            "positions": workload.positions_per_poll,
            "interval_s": interval_s,
            "rate_per_s": rate,
            "start_to_listening_s": running.start_to_listening_s,
            "peak_rss_mib": daemon_peak,
            "latencies_ms": scraped.latencies_ms,
            "bytes": scraped.bytes_,
            "failures": scraped.failures,
            "poll_wall_s": scraped.poll_wall_s,
            "responses_by_status": statuses,
            "requests": state_after["requests"] - state_before["requests"],
            "daemon_errors": [
                line for line in daemon_log.splitlines() if " ERROR " in line or "Traceback" in line
            ][:10],
        }
        log(f"    listening after {running.start_to_listening_s:.2f} s")

    def once(self, config: dict[str, Any], backend: str, workload: Workload, rate: int) -> None:
        """``exposure-monitor once`` as a whole process (start, restore, poll, record, print)
        on the unchanged portfolio, its CPU measured from outside: with ``--changes`` (it
        prints only what changed: nothing) and as is (the table of every position, to
        /dev/null). Then the interpreter's own start-up, for the floor."""
        path = self.folder / "once.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        runs: dict[str, ChildRun] = {}
        for name, extra in (("changes", ["--changes"]), ("table", [])):
            log(f"once / {backend}: exposure-monitor once --config FILE {' '.join(extra)}")
            args = [sys.executable, "-m", "monitor", "once", "--config", str(path), *extra]
            if self.args.profile is not None:
                args = profiling.wrap(args, self.args.profile / f"once-{backend}-{name}.txt")
            runs[name] = run_measured(args)
            log(f"    {runs[name].cpu_s:.2f} s CPU, {runs[name].wall_s:.1f} s wall")
        self.once_runs = {
            "backend": backend,
            "workload": workload.name,
            "rate_per_s": rate,
            "runs": {
                name: {
                    "cpu_s": run.cpu_s,
                    "wall_s": run.wall_s,
                    "returncode": run.returncode,
                    "stderr_tail": run.stderr_tail if run.returncode else "",
                }
                for name, run in runs.items()
            },
            "interpreter_start_cpu_s": interpreter_start_cpu_s(),
        }


def headline_workload(workloads: set[str]) -> Workload | None:
    """The workload of the summary table: the large portfolio when it runs with its unchanged
    polls, else the small one (the smoke run); a churn-only run has none."""
    if "large" in workloads:
        return LARGE
    if "small" in workloads:
        return SMALL
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    workloads = {"small", "large", "churn"} if args.workload == "all" else {args.workload}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="exposure-monitor-bench-") as tmp:
        folder = Path(tmp)
        databases = Databases(folder, args.postgres)
        machine = describe_machine(databases if "postgresql" in backends else None)
        for line in report.describe(machine, describe_code()):
            log(line)
        bench = Run(args, folder, databases)
        headline = headline_workload(workloads)
        try:
            steady_copy: Database | None = None
            for backend in backends:
                if "small" in workloads:
                    copy = bench.small(backend, keep_copy=headline is SMALL and steady_copy is None)
                    steady_copy = steady_copy or copy
                if workloads & {"large", "churn"}:
                    copy = bench.large(
                        backend,
                        steady="large" in workloads,
                        churn="churn" in workloads,
                        keep_copy=headline is LARGE and steady_copy is None,
                    )
                    steady_copy = steady_copy or copy
            if steady_copy is not None and headline is not None:
                rate = args.rate if headline is LARGE else SMALL_DAEMON_RATE
                bench.processes(steady_copy, headline, rate)
        finally:
            databases.drop_all()
    return {
        "machine": machine,
        "code": describe_code(),
        "workloads": {"small": SMALL.describe(), "large": LARGE.describe()},
        "args": {"workload": args.workload, "backend": args.backend, "rate": args.rate},
        "headline": {"workload": headline.name, "backend": backends[0]} if headline else None,
        "workers": bench.workers,
        "scrape": bench.scrape,
        "once": bench.once_runs,
        "profiled": args.profile is not None,
        "elapsed_s": time.monotonic() - started,
        "load_at_end": load_average(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workload.startswith("discovery"):
        workload = DISCOVERY if args.workload == "discovery" else DISCOVERY_SMALL
        results = discovery.run(args, workload)
        render = discovery.render
    else:
        results = run(args)
        render = report.render
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    lines, failed = render(results)
    print("\n".join(lines))
    return 1 if failed and args.strict else 0
