"""One measuring process: drives ``monitor.daemon.poll_cycle.Monitor`` in-process, exactly as the
daemon wires it (client, store, prices, exploit list, instruments), against a simulator running
in another process, and measures every poll cycle.

Reads a JSON spec on stdin, prints a JSON result on stdout. Run by ``benchmarks.cli`` in a
fresh process per backend and workload family (small; large then churn), so that memory
peaks and caches never mix with another run's. Phases share one engine and store, as one
daemon would; each phase has its own client and ``Monitor``, restored from the store.

Per poll: CPU seconds of the whole cycle and of its parts (``time.process_time``: every thread
of this process, aiosqlite's included; the simulator's CPU is in its own process), wall time,
peak resident memory (VmHWM, reset before each poll), rows and bytes written, and the floors
measured on the same response bytes right after.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import os
import resource
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks import profiling
from benchmarks.databases import copy_database
from benchmarks.floor import PARSER, Body, FloorFigures, FloorProcess, FloorState, read_bodies
from benchmarks.storage import POLL_RECORD_TABLES, TABLES, Probe, RowCounter, make_probe
from monitor import __version__
from monitor.collector import deferred_full_collections
from monitor.config import Config, parse_config
from monitor.config.exploits import load_exploits
from monitor.config.model import RiskSettings
from monitor.daemon.metrics import Instruments
from monitor.daemon.poll_cycle import Monitor
from monitor.oneinch.prices import SpotPriceSource
from monitor.poller import OneInchPositions
from monitor.ports import utc_now
from monitor.runtime import open_client
from monitor.store import migrate
from monitor.store.engine import create_engine
from monitor.store.snapshots import SqlSnapshotStore

AGGREGATED = "/aggregatedBalancesAndAllowances/"


# -- memory ------------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so each poll gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_mib() -> float:
    hwm = _status_kib("VmHWM")
    if hwm == 0:  # not Linux: the process-wide peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return hwm / 1024


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


# -- capturing what the monitor received ---------------------------------------------------------


class Spool:
    """The aggregated answers of the current poll, appended to a file as they arrive rather
    than kept in memory (which would inflate the very peak this process measures)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(self, chain_id: int, spender: str, body: bytes) -> None:
        head = f"{chain_id} {spender} {len(body)}\n".encode()
        self._file.write(head)
        self._file.write(body)
        self.count += 1

    def clear(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self.count = 0

    @property
    def path(self) -> Path:
        """The file, flushed: what was spooled can be read from it (``read_bodies``)."""
        self._file.flush()
        return self._path

    def bodies(self) -> Iterator[Body]:
        return read_bodies(self.path)

    def close(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class GcPauses:
    """The cyclic garbage collector's pauses (it stops every thread while it runs)."""

    def __init__(self) -> None:
        self.pauses_ms: list[tuple[int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_ms.append(
                (info["generation"], (time.perf_counter() - self._started) * 1000)
            )

    def close(self) -> None:
        gc.callbacks.remove(self._callback)

    def take(self) -> dict[str, float]:
        pauses, self.pauses_ms = self.pauses_ms, []
        full = [ms for generation, ms in pauses if generation == 2]
        return {
            "total_s": sum(ms for _, ms in pauses) / 1000,
            "max_ms": max((ms for _, ms in pauses), default=0.0),
            "full_collections": len(full),
            "full_max_ms": max(full, default=0.0),
        }


def request_starts(sink: list[float]) -> aiohttp.TraceConfig:
    """Records when each aggregated request starts (after the client's rate limiter)."""
    trace = aiohttp.TraceConfig()

    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        if AGGREGATED in params.url.path:
            sink.append(time.perf_counter())

    trace.on_request_start.append(on_start)
    return trace


def _gaps_ms(starts: list[float]) -> dict[str, float] | None:
    """Spacing of consecutive request starts: what the rate limiter achieved."""
    if len(starts) < 2:
        return None
    gaps = sorted((b - a) * 1000 for a, b in itertools.pairwise(starts))
    return {
        "mean": sum(gaps) / len(gaps),
        "p50": gaps[len(gaps) // 2],
        "p99": gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))],
        "max": gaps[-1],
        "first_to_last_s": starts[-1] - starts[0],
    }


def capturing_response(spool: Spool) -> type[aiohttp.ClientResponse]:
    """A response class that spools the bytes of every aggregated answer (for the floor)."""

    class CapturingResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            body = await super().read()
            path = self.url.path
            if self.status == 200 and AGGREGATED in path:
                parts = path.split("/")  # /balance/v1.2/{chain}/aggregated.../{spender}
                spool.add(int(parts[3]), parts[5].lower(), body)
            return body

    return CapturingResponse


# -- timing the parts of a cycle ------------------------------------------------------------------


@dataclass
class Marks:
    """process_time / perf_counter at the boundaries of one cycle."""

    cpu: dict[str, float] = field(default_factory=dict)
    wall: dict[str, float] = field(default_factory=dict)
    events_cpu_s: float = 0.0
    prices_cpu_s: float = 0.0
    recorded: Any = None
    findings: int = 0
    finding_changes: Any = None

    def mark(self, name: str) -> None:
        self.cpu[name] = time.process_time()
        self.wall[name] = time.perf_counter()


class TimedStore:
    """The real store, with the boundaries of the calls ``Monitor`` makes marked."""

    def __init__(self, store: SqlSnapshotStore) -> None:
        self._store = store
        self.marks = Marks()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def record_poll(self, result: Any) -> Any:
        self.marks.mark("record_start")
        try:
            recorded = await self._store.record_poll(result)
            self.marks.recorded = recorded
            return recorded
        finally:
            self.marks.mark("record_end")

    async def events(self, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return await self._store.events(**kwargs)
        finally:
            self.marks.events_cpu_s += time.process_time() - started

    async def sync_findings(self, found: Iterable[Any], *, now: datetime) -> Any:
        found = tuple(found)
        self.marks.findings = len(found)
        self.marks.mark("sync_start")
        try:
            changes = await self._store.sync_findings(found, now=now)
            self.marks.finding_changes = changes
            return changes
        finally:
            self.marks.mark("sync_end")


class TimedPrices:
    """The real price source, its CPU time counted (it is part of the risk step)."""

    def __init__(self, prices: SpotPriceSource, marks: Callable[[], Marks]) -> None:
        self._prices = prices
        self._marks = marks

    async def usd_prices(self, chain_id: int, tokens: Any) -> Any:
        started = time.process_time()
        try:
            return await self._prices.usd_prices(chain_id, tokens)
        finally:
            self._marks().prices_cpu_s += time.process_time() - started


# -- the run ----------------------------------------------------------------------------------


def _simulator_state(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_simulator/state", timeout=30) as reply:  # noqa: S310
        data: dict[str, Any] = json.loads(reply.read())
    return {"requests": data["requests"], "by_status": data["responses_by_status"]}


def _phase_config(base: dict[str, Any], phase: dict[str, Any], db_url: str) -> Config:
    doc = json.loads(json.dumps(base))
    doc["api"] = {
        **doc.get("api", {}),
        "base_url": phase["base_url"],
        "requests_per_second": phase["requests_per_second"],
    }
    doc["database"] = {"url": db_url, "migrate_on_start": True}
    doc["poll"] = {"interval_s": 3600, "timeout_s": 3600, "jitter_s": 0}
    return parse_config(doc)


@dataclass
class Database:
    """The engine and store every phase of this process shares (as one daemon would)."""

    engine: AsyncEngine
    store: TimedStore
    counter: RowCounter


async def run_phase(
    spec: dict[str, Any],
    phase: dict[str, Any],
    database: Database,
    probe: Probe,
    floor: FloorProcess,
    spool: Spool,
) -> list[dict[str, Any]]:
    """A new client and ``Monitor`` for ``phase``'s simulator, restored from the store (as
    at a daemon's start), then the phase's polls, each measured."""
    config = _phase_config(spec["config"], phase, spec["db_url"])
    store, counter = database.store, database.counter
    registry = CollectorRegistry(auto_describe=True)
    instruments = Instruments(registry, version=__version__)
    api = config.api
    results: list[dict[str, Any]] = []
    starts: list[float] = []
    gc_pauses = GcPauses()
    profile_dir = Path(spec["profile_dir"]) if spec.get("profile_dir") else None
    # The same wiring as monitor.daemon.run.run_daemon, with a session whose responses are
    # spooled for the floor.
    async with open_client(
        config,
        None,
        response_class=capturing_response(spool),
        trace_configs=[request_starts(starts)],
    ) as client:
        prices = (
            TimedPrices(
                SpotPriceSource(
                    client, ttl_s=config.risk.prices.ttl_s, wait_s=config.risk.prices.timeout_s
                ),
                lambda: store.marks,
            )
            if config.risk.prices.enabled
            else None
        )
        monitor = Monitor(
            config=config,
            source=OneInchPositions(client, config, clock=utc_now),
            store=store,
            prices=prices,
            exploits=load_exploits(config.risk.denylist_file),
            instruments=instruments,
            clock=utc_now,
            poll_timeout_s=3600,
        )
        restore_started = time.process_time()
        await monitor.restore()
        restore_cpu_s = time.process_time() - restore_started
        counter.take()
        before = probe.sizes()
        for index, kind in enumerate(phase["polls"]):
            spool.clear()
            starts.clear()
            store.marks = Marks()
            sim_before = _simulator_state(phase["base_url"])
            profiler = None
            if profile_dir is not None:
                name = f"{phase['name']}-{spec['backend']}-poll{index + 1}-{kind}.txt"
                profiler = profiling.start(os.getpid(), profile_dir / name)
            reset_peak()
            gc_pauses.take()
            store.marks.mark("start")
            await monitor.poll_cycle()
            store.marks.mark("end")
            gc_stats = gc_pauses.take()
            peak = peak_mib()
            rss = rss_mib()
            profiling.stop(profiler)
            sim_after = _simulator_state(phase["base_url"])
            written = counter.take()
            after = probe.sizes()
            # Unchanged answers are also compared with the stdlib's parser: the decoding part
            # of the floor of ``once`` as a whole process (see the README).
            floor_figures = floor.poll(
                spool.path, restarted=kind != "initial", stdlib=kind == "unchanged"
            )
            results.append(
                _poll_result(
                    phase=phase["labels"][index],
                    index=index,
                    kind=kind,
                    marks=store.marks,
                    monitor=monitor,
                    peak=peak,
                    rss=rss,
                    written=written,
                    before=before,
                    after=after,
                    floor=floor_figures,
                    sim_before=sim_before,
                    sim_after=sim_after,
                    starts=list(starts),
                    gc_stats=gc_stats,
                    rate=api.requests_per_second,
                    restore_cpu_s=restore_cpu_s if index == 0 else None,
                )
            )
            before = after
            print(
                f"    {phase['name']} poll {index + 1} ({kind}): "
                f"{results[-1]['cpu_s']:.2f} s CPU (floor {floor_figures.poll.cpu_s:.3f} s), "
                f"{results[-1]['wall_s']:.1f} s wall, {results[-1]['rows_written']} rows, "
                f"peak {peak:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    gc_pauses.close()
    return results


def floor_memory_mib(bodies: list[Body]) -> float:
    """The floor's own memory: the previous and the current state as plain dicts, plus one
    decoded answer at a time (traced allocations at their peak)."""
    tracemalloc.start()
    floor = FloorState()
    floor.poll(bodies)
    floor.poll(bodies)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def _poll_result(
    *,
    phase: str,
    index: int,
    kind: str,
    marks: Marks,
    monitor: Monitor,
    peak: float,
    rss: float,
    written: Any,
    before: Any,
    after: Any,
    floor: FloorFigures,
    sim_before: dict[str, Any],
    sim_after: dict[str, Any],
    rate: float,
    restore_cpu_s: float | None,
    starts: list[float],
    gc_stats: dict[str, float],
) -> dict[str, Any]:
    cpu, wall = marks.cpu, marks.wall

    def span(start: str, end: str, clock: dict[str, float]) -> float | None:
        if start in clock and end in clock:
            return clock[end] - clock[start]
        return None

    recorded = marks.recorded
    view = monitor.view
    by_table: dict[str, dict[str, int]] = {}
    for (verb, table), rows in written.items():
        by_table.setdefault(table, {})[verb] = rows
    inserted_by_count = {t: after.rows[t] - before.rows[t] for t in TABLES}
    rows_written = sum(written.values())
    beyond_record = sum(
        rows for (verb, table), rows in written.items() if table not in POLL_RECORD_TABLES
    )
    statuses: dict[str, int] = {}
    for status, n in sim_after["by_status"].items():
        statuses[status] = n - sim_before["by_status"].get(status, 0)
    requests = sim_after["requests"] - sim_before["requests"]
    changes = marks.finding_changes
    return {
        "phase": phase,
        "index": index,
        "kind": kind,
        "cpu_s": cpu["end"] - cpu["start"],
        "wall_s": wall["end"] - wall["start"],
        "parts_cpu_s": {
            "fetch_parse": span("start", "record_start", cpu),
            "record_poll": span("record_start", "record_end", cpu),
            "risk": span("record_end", "sync_start", cpu),
            "risk_events_read": marks.events_cpu_s,
            "risk_prices": marks.prices_cpu_s,
            "sync_findings": span("sync_start", "sync_end", cpu),
            "publish": span("sync_end", "end", cpu),
        },
        "parts_wall_s": {
            "fetch_parse": span("start", "record_start", wall),
            "record_poll": span("record_start", "record_end", wall),
            "risk": span("record_end", "sync_start", wall),
            "sync_findings": span("sync_start", "sync_end", wall),
            "publish": span("sync_end", "end", wall),
        },
        "restore_cpu_s": restore_cpu_s,
        "outcome": getattr(recorded, "outcome", None),
        "events": recorded.change_count if recorded is not None else None,
        "versions_written": getattr(recorded, "versions_written", None),
        "findings": marks.findings,
        "findings_opened": getattr(changes, "opened", None),
        "findings_resolved": getattr(changes, "resolved", None),
        "findings_updated": getattr(changes, "updated", None),
        "allowances": len(view.snapshot.allowances),
        "balances": len(view.snapshot.balances),
        "peak_mib": peak,
        "rss_after_mib": rss,
        "rows_written": rows_written,
        "rows_beyond_poll_record": beyond_record,
        "rows_by_table": by_table,
        "rows_inserted_by_count": inserted_by_count,
        "bytes_on_disk": after.bytes_on_disk - before.bytes_on_disk,
        "payload_bytes": (
            after.payload_bytes - before.payload_bytes
            if after.payload_bytes is not None and before.payload_bytes is not None
            else None
        ),
        "floor_cpu_s": floor.poll.cpu_s,
        "floor_changes": floor.poll.changes,
        "floor_rows": floor.poll.changes,
        "floor_stdlib_cpu_s": floor.stdlib_cpu_s,
        "floor_bytes_on_disk": floor.write.bytes_on_disk,
        "floor_payload_bytes": floor.write.payload_bytes,
        "floor_write_cpu_s": floor.write.cpu_s,
        "requests": requests,
        "responses_by_status": statuses,
        "rate_per_s": rate,
        "measure_s": after.measure_s,
        "request_start_gaps_ms": _gaps_ms(starts),
        "gc": gc_stats,
    }


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    started_rss = rss_mib()
    engine = create_engine(spec["db_url"])
    await migrate.upgrade(engine)
    threshold = RiskSettings().unlimited_threshold  # the workloads keep the default
    database = Database(
        engine=engine,
        store=TimedStore(SqlSnapshotStore(engine, unlimited_threshold=threshold)),
        counter=RowCounter(engine),
    )
    probe = make_probe(spec)
    floor = FloorProcess({k: spec[k] for k in ("backend", "sqlite_path", "db_url") if k in spec})
    spool = Spool(Path(spec["spool_path"]))
    polls: list[dict[str, Any]] = []
    try:
        for phase in spec["phases"]:
            polls.extend(await run_phase(spec, phase, database, probe, floor, spool))
            if phase.get("copy_to"):
                await engine.dispose()  # no session may stay open on a template database
                probe.close()
                copy_database(spec["db_url"], phase["copy_to"], spec.get("postgres_admin"))
                probe = make_probe(spec)
        floor_memory = floor_memory_mib(list(spool.bodies()))
    finally:
        floor.close()
        probe.close()
        spool.close()
        await engine.dispose()
    return {
        "backend": spec["backend"],
        "parser": PARSER,
        "rss_at_start_mib": started_rss,
        "floor_memory_mib": floor_memory,
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "polls": polls,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.load(sys.stdin)
    # As ``exposure-monitor run`` does: full collections at the end of a poll cycle.
    with deferred_full_collections():
        result = asyncio.run(main_async(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
