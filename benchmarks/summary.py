"""The summary table: the eight figures of issue 12, each beside its floor from the same run,
with its budget and PASS or FAIL.

Every figure comes from the headline workload (the large portfolio, else the small one) on
the first backend of the run; the detailed tables below it cover every workload and backend.
A figure the run did not measure (``--workload churn`` has no daemon run) says so and is
neither passed nor failed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.scrape import percentile

MIB = 2**20 / 10**6  # MiB -> MB
UNLIMITED_RATE = 10_000

UNCHANGED_CPU_RATIO = 2.0
ONCE_CPU_RATIO = 3.0
FIRST_POLL_CPU_RATIO = 5.0
FIRST_POLL_DISK_RATIO = 2.0
PEAK_RSS_MB = 300.0
SCRAPE_P99_MS = 100.0
WALL_RATIO = 1.05
START_TO_LISTENING_S = 2.0

FLOORS = (
    "floors, all measured in this run on the same data:",
    "- unchanged poll: the answers' bytes the monitor received, decoded with orjson and "
    "compared with the previous state in plain dicts (benchmarks/floor.py), GC off",
    "- once: the same unchanged answers decoded with the stdlib's json and compared the same "
    "way, plus the CPU of `python -c pass` (interpreter start-up, site and .pth files)",
    "- first poll: its decode+compare floor plus the CPU of one bare executemany of every "
    "value into an unindexed scratch table, commit included",
    "- disk: the database's growth for that bare executemany (SQLite: file size after the "
    "commit; PostgreSQL: pg_total_relation_size)",
    "- peak RSS: the measuring process at start (interpreter and imports) plus the floor's "
    "traced peak (the previous and the current state as plain dicts)",
    "- /metrics: the same daemon, same data, no poll running",
    "- poll wall: requests / R, the time the rate limit alone takes",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    figure: str
    measured: str
    floor: str
    budget: str
    ok: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return "-" if self.ok is None else ("PASS" if self.ok else "FAIL")


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _s(value: float) -> str:
    if value >= 10:
        return f"{value:.1f} s"
    if value >= 0.1:
        return f"{value:.2f} s"
    return f"{value:.3f} s"


def _mb(value_bytes: float) -> str:
    return f"{value_bytes / 1e6:,.1f} MB"


def _missing(figure: str, floor: str, budget: str, why: str = "not measured") -> Row:
    return Row(figure=figure, measured=why, floor=floor, budget=budget, ok=None)


class Summary:
    """The rows, from a run's results (``benchmarks.cli.run``)."""

    def __init__(self, results: dict[str, Any]) -> None:
        headline = results.get("headline") or {}
        self.workload: str | None = headline.get("workload")
        self.backend: str | None = headline.get("backend")
        worker = results["workers"].get(f"{self.workload}/{self.backend}")
        self.polls: list[dict[str, Any]] = worker["polls"] if worker else []
        self.worker = worker
        self.scrape: dict[str, Any] | None = results.get("scrape")
        self.once: dict[str, Any] | None = results.get("once")

    def _of(self, kind: str) -> list[dict[str, Any]]:
        return [p for p in self.polls if p["phase"] == self.workload and p["kind"] == kind]

    def rows(self) -> list[Row]:
        makers: list[Callable[[], Row]] = [
            self.unchanged_cpu,
            self.once_cpu,
            self.first_poll_cpu,
            self.first_poll_disk,
            self.peak_rss,
            self.scrape_p99,
            self.poll_wall,
            self.start_to_listening,
        ]
        return [make() for make in makers]

    def unchanged_cpu(self) -> Row:
        figure, budget = "CPU, unchanged daemon poll", f"<= {UNCHANGED_CPU_RATIO:g}x floor"
        polls = self._of("unchanged")
        if not polls:
            return _missing(figure, "orjson decode+compare", budget)
        cpu = _median([p["cpu_s"] for p in polls])
        floor = _median([p["floor_cpu_s"] for p in polls])
        limit = UNCHANGED_CPU_RATIO * floor
        return Row(
            figure=figure,
            measured=f"{_s(cpu)} ({cpu / floor:.1f}x; median of {len(polls)})",
            floor=f"{_s(floor)} orjson decode+compare",
            budget=f"{budget} = {_s(limit)}",
            ok=cpu <= limit,
        )

    def once_cpu(self) -> Row:
        figure = (
            "CPU, `once` as a whole process on an unchanged portfolio "
            "(start, restore, poll, record)"
        )
        budget = f"<= {ONCE_CPU_RATIO:g}x floor"
        stdlib = [p["floor_stdlib_cpu_s"] for p in self._of("unchanged")]
        stdlib = [s for s in stdlib if s is not None]
        if self.once is None or not stdlib:
            return _missing(figure, "stdlib decode+compare + interpreter start", budget)
        run = self.once["runs"]["changes"]
        start = self.once["interpreter_start_cpu_s"]
        floor = _median(stdlib) + start
        limit = ONCE_CPU_RATIO * floor
        failed = run["returncode"] != 0
        return Row(
            figure=figure,
            measured=f"{_s(run['cpu_s'])} ({run['cpu_s'] / floor:.1f}x; `once --changes`)"
            + (f", exit {run['returncode']}" if failed else ""),
            floor=f"{_s(floor)} = {_s(_median(stdlib))} stdlib decode+compare "
            f"+ {_s(start)} `python -c pass`",
            budget=f"{budget} = {_s(limit)}",
            ok=run["cpu_s"] <= limit and not failed,
        )

    def first_poll_cpu(self) -> Row:
        figure = "CPU, first poll (everything new)"
        budget = f"<= {FIRST_POLL_CPU_RATIO:g}x floor + one bare executemany"
        polls = self._of("initial")
        if not polls:
            return _missing(figure, "decode+compare + bare executemany", budget)
        poll = polls[0]
        cpu, floor, write = poll["cpu_s"], poll["floor_cpu_s"], poll["floor_write_cpu_s"]
        limit = FIRST_POLL_CPU_RATIO * floor + write
        return Row(
            figure=figure,
            measured=f"{_s(cpu)} ({cpu / (floor + write):.1f}x floor)",
            floor=f"{_s(floor)} decode+compare + {_s(write)} executemany of "
            f"{poll['floor_rows']:,} rows",
            budget=f"{budget} = {_s(limit)}",
            ok=cpu <= limit,
        )

    def first_poll_disk(self) -> Row:
        backend = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(self.backend or "", "-")
        figure = f"disk written by the first poll ({backend})"
        budget = f"<= {FIRST_POLL_DISK_RATIO:g}x floor"
        polls = self._of("initial")
        if not polls:
            return _missing(figure, "bare executemany bytes", budget)
        poll = polls[0]
        written, floor = poll["bytes_on_disk"], poll["floor_bytes_on_disk"]
        limit = FIRST_POLL_DISK_RATIO * floor
        return Row(
            figure=figure,
            measured=f"{_mb(written)}, {poll['rows_written']:,} rows ({written / floor:.1f}x)",
            floor=f"{_mb(floor)}, {poll['floor_rows']:,} rows: bare executemany",
            budget=f"{budget} = {_mb(limit)}",
            ok=written <= limit,
        )

    def peak_rss(self) -> Row:
        figure, budget = "peak RSS", f"< {PEAK_RSS_MB:.0f} MB"
        if self.worker is None or not self.polls:
            return _missing(figure, "start + two states as dicts", budget)
        peak = max(p["peak_mib"] for p in self.polls) * MIB
        floor = (self.worker["rss_at_start_mib"] + self.worker["floor_memory_mib"]) * MIB
        return Row(
            figure=figure,
            measured=f"{peak:,.0f} MB (every poll of the worker)",
            floor=f"{floor:,.0f} MB = process at start + two states as dicts",
            budget=budget,
            ok=peak < PEAK_RSS_MB,
        )

    def scrape_p99(self) -> Row:
        figure, budget = "`/metrics` p99 during a poll", f"< {SCRAPE_P99_MS:.0f} ms"
        latencies: dict[str, list[float]] = (self.scrape or {}).get("latencies_ms") or {}
        during = [
            v for state, values in latencies.items() if state.startswith("poll") for v in values
        ]
        idle = latencies.get("idle")
        if not during:
            return _missing(figure, "idle p99", budget, "no scrape during a poll")
        p99 = percentile(during, 99)
        return Row(
            figure=figure,
            measured=f"{p99:.1f} ms ({len(during)} scrapes)",
            floor=f"idle {percentile(idle, 99):.1f} ms" if idle else "idle: -",
            budget=budget,
            ok=p99 < SCRAPE_P99_MS,
        )

    def poll_wall(self) -> Row:
        figure, budget = "poll wall / (requests / R)", f"<= {WALL_RATIO:g}x, no 429"
        rated = [p for p in self._of("unchanged") if p["rate_per_s"] < UNLIMITED_RATE]
        if rated:
            wall = _median([p["wall_s"] for p in rated])
            requests = _median([p["requests"] for p in rated])
            rate = rated[0]["rate_per_s"]
            limited = sum(p["responses_by_status"].get("429", 0) for p in rated)
            source = f"unchanged polls, median of {len(rated)}"
        elif self.scrape and self.scrape["poll_wall_s"]:
            walls = {int(k): v for k, v in self.scrape["poll_wall_s"].items()}
            wall = walls[min(walls)]
            requests = self.scrape["requests"]
            rate = self.scrape["rate_per_s"]
            limited = self.scrape["responses_by_status"].get("429", 0)
            source = "the daemon's poll"
        else:
            return _missing(figure, "1.0", budget)
        bound = requests / rate
        ratio = wall / bound
        return Row(
            figure=figure,
            measured=f"{ratio:.2f}x ({_s(wall)} for {requests:.0f} requests at {rate:g}/s; "
            f"{source}), {limited} x 429",
            floor=f"1.0 ({_s(bound)})",
            budget=budget,
            ok=ratio <= WALL_RATIO and limited == 0,
        )

    def start_to_listening(self) -> Row:
        figure, budget = "daemon start to listening", f"< {START_TO_LISTENING_S:g} s"
        if self.scrape is None:
            return _missing(figure, "", budget)
        listening_s = self.scrape["start_to_listening_s"]
        return Row(
            figure=figure,
            measured=f"{_s(listening_s)} (spawn to first /healthz answer)",
            floor="",
            budget=budget,
            ok=listening_s < START_TO_LISTENING_S,
        )


def title(results: dict[str, Any]) -> str:
    headline = results.get("headline") or {}
    workload = results["workloads"].get(headline.get("workload"), "no headline workload")
    return (
        f"Summary: issue 12's figures, {headline.get('workload', '-')} workload "
        f"({workload}) on {headline.get('backend', '-')}"
    )
