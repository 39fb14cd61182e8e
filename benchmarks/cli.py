"""``python -m benchmarks``: run the workloads, print the results table and the budgets.

Every process of a run talks to 127.0.0.1 only: the simulators (``exposure-monitor
simulate``), the measuring workers (``python -m benchmarks.worker``), the daemon
(``exposure-monitor run``), and PostgreSQL when asked for.
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

from benchmarks import profiling, report, scrape
from benchmarks.databases import DEFAULT_POSTGRES, Database, Databases
from benchmarks.machine import describe_code, describe_machine, load_average
from benchmarks.processes import Simulator, run_worker, simulator
from benchmarks.workloads import LARGE, SMALL

UNLIMITED_RATE = 10_000
"""``api.requests_per_second`` for the CPU runs: the client's limiter never waits."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="exposure-monitor benchmarks: CPU, writes, memory, scrape latency and API "
        "efficiency at scale, each beside its floor, with the budgets checked.",
    )
    parser.add_argument(
        "--workload",
        choices=("small", "large", "churn", "all"),
        default="all",
        help="small: 10 wallets x 20 tokens x 2 spenders x 2 chains; large: 2,000 x 50 x 3 on "
        "one chain (300,000 positions), with the scrape and API-efficiency runs; churn: the "
        "large one with 1%% of positions changing each poll; all (default): every one",
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
        default=LARGE.rate_per_s,
        metavar="R",
        help="requests per second the simulator enforces for the large and churn workloads "
        "(default %(default)s)",
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
    return parser.parse_args(argv)


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

    def small(self, backend: str) -> None:
        log(f"small / {backend}")
        database = self.databases.new(backend, "small")
        with simulator(SMALL.scenario(churn=False), self.folder / "small.yaml") as sim:
            config = sim.monitor_config()
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
                self.workers[f"small/{backend}"] = _worker(
                    database, config, phases, self.folder, self.args.profile
                )

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
            config = sim.monitor_config()
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

    def daemon(self, database: Database) -> None:
        """``exposure-monitor run`` on the database of the large portfolio: /metrics scraped
        during its first poll (a full, unchanged poll of 300,000 positions) and after it."""
        rate = self.args.rate
        interval_s = 3600  # one poll in this run
        log(
            f"scrape / {database.backend}: exposure-monitor run, {rate} requests/s; /metrics "
            f"scraped during a poll, then while idle"
        )
        scenario = LARGE.scenario(churn=False, rate=rate)
        with simulator(scenario, self.folder / "large-daemon.yaml") as sim:
            config = sim.monitor_config()
            config["database"] = {"url": database.url}
            config["poll"] = {"interval_s": interval_s, "timeout_s": interval_s, "jitter_s": 0}
            state_before = sim.state()
            started = time.monotonic()
            with scrape.daemon(config, self.folder) as (host, port, log_path, pid):
                listening_s = time.monotonic() - started
                profiler = None
                if self.args.profile is not None:
                    name = f"daemon-{database.backend}-poll1-scraped.txt"
                    profiler = profiling.start(pid, self.args.profile / name)
                scraped = scrape.scrape_polls(
                    host,
                    port,
                    polls=1,
                    max_per_poll=300,
                    idle_after=20,
                    pause_s=0.05,
                    timeout_s=60,
                    deadline_s=600,
                )
                profiling.stop(profiler)
            state_after = sim.state()
            daemon_log = log_path.read_text()
        statuses = {
            status: n - state_before["responses_by_status"].get(status, 0)
            for status, n in state_after["responses_by_status"].items()
        }
        self.scrape = {
            "backend": database.backend,
            "interval_s": interval_s,
            "rate_per_s": rate,
            "start_to_listening_s": listening_s,
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
        try:
            steady_copy: Database | None = None
            for backend in backends:
                if "small" in workloads:
                    bench.small(backend)
                if workloads & {"large", "churn"}:
                    copy = bench.large(
                        backend,
                        steady="large" in workloads,
                        churn="churn" in workloads,
                        keep_copy="large" in workloads and steady_copy is None,
                    )
                    steady_copy = steady_copy or copy
            if steady_copy is not None:
                bench.daemon(steady_copy)
        finally:
            databases.drop_all()
    return {
        "machine": machine,
        "code": describe_code(),
        "workloads": {"small": SMALL.describe(), "large": LARGE.describe()},
        "args": {"workload": args.workload, "backend": args.backend, "rate": args.rate},
        "workers": bench.workers,
        "scrape": bench.scrape,
        "profiled": args.profile is not None,
        "elapsed_s": time.monotonic() - started,
        "load_at_end": load_average(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    lines, failed = report.render(results)
    print("\n".join(lines))
    return 1 if failed and args.strict else 0
