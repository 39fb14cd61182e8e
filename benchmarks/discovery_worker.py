"""The discovery workload's measuring process: drives the product's ``Monitor`` in-process,
wired by ``monitor.daemon.poll_cycle.make_monitor`` exactly as ``exposure-monitor run`` and
``once`` wire it (the chain reader over the client's session, its rate limiter, the SQL store,
prices, exploit list, instruments), against a simulator serving the Web3 RPC API in another
process, and measures every poll cycle.

Reads a JSON spec on stdin, prints a JSON result on stdout (``benchmarks.discovery`` runs it).

Per poll: CPU seconds of the whole cycle (``time.process_time``: every thread of this
process), wall time, peak resident memory (VmHWM, reset before the poll), the JSON-RPC calls
the monitor sent by method (counted in the request bodies as they leave, so a batch of ten
``aggregate3`` counts ten ``eth_call``), its HTTP requests to the Web3 RPC API, the wall time
of the log scan (first ``eth_getLogs`` sent to the last scan answer), the simulator's answers
by status, and the floor of a steady poll measured on the very answers' bytes.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import resource
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from benchmarks import profiling
from benchmarks.worker import peak_mib, reset_peak, rss_mib
from monitor import __version__
from monitor.config import parse_config
from monitor.daemon.metrics import Instruments
from monitor.daemon.poll_cycle import make_monitor
from monitor.ports import utc_now
from monitor.runtime import open_client, open_store

WEB3_PATH = "/web3/"
METHODS = (b"eth_getLogs", b"eth_getBlockByNumber", b"eth_call", b"eth_getCode", b"eth_blockNumber")
SCAN_METHODS = ("eth_getLogs", "eth_getBlockByNumber")


# -- what the monitor sent and received --------------------------------------------------------


@dataclass
class RpcTraffic:
    """JSON-RPC calls by method, HTTP requests, scan timing and the steady answers' bytes."""

    calls: dict[str, int] = field(default_factory=dict)
    """Sent, by method: a request refused (413, 429) and sent again counts twice."""
    answered: dict[str, int] = field(default_factory=dict)
    """In requests answered 200."""
    http_requests: int = 0
    scan_first_start: float | None = None
    scan_last_end: float | None = None
    spooling: bool = False
    answers: list[bytes] = field(default_factory=list)

    def take(self) -> dict[str, Any]:
        scan_wall_s = (
            self.scan_last_end - self.scan_first_start
            if self.scan_first_start is not None and self.scan_last_end is not None
            else None
        )
        taken = {
            "calls": dict(self.calls),
            "answered": dict(self.answered),
            "http_requests": self.http_requests,
            "scan_wall_s": scan_wall_s,
        }
        self.calls.clear()
        self.answered.clear()
        self.http_requests = 0
        self.scan_first_start = self.scan_last_end = None
        return taken


def tracing(traffic: RpcTraffic) -> aiohttp.TraceConfig:
    """Counts the JSON-RPC methods in every request body sent to the Web3 RPC API (the
    chain reader sends compact JSON: ``"method":"eth_call"``), and times the scan's
    requests. Costs a ``bytes.count`` per method and body."""
    trace = aiohttp.TraceConfig()

    async def on_start(
        _: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        ctx.web3 = WEB3_PATH in params.url.path
        ctx.methods = {}
        if ctx.web3:
            traffic.http_requests += 1

    async def on_chunk(
        _: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        if not getattr(ctx, "web3", False):
            return
        for method in METHODS:
            n = params.chunk.count(b'"method":"' + method + b'"')
            if n:
                name = method.decode()
                ctx.methods[name] = ctx.methods.get(name, 0) + n
                traffic.calls[name] = traffic.calls.get(name, 0) + n
        if "eth_getLogs" in ctx.methods and traffic.scan_first_start is None:
            traffic.scan_first_start = time.perf_counter()

    async def on_end(_: Any, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams) -> None:
        if not getattr(ctx, "web3", False):
            return
        if params.response.status == 200:
            for name, n in ctx.methods.items():
                traffic.answered[name] = traffic.answered.get(name, 0) + n
        if any(m in ctx.methods for m in SCAN_METHODS):
            traffic.scan_last_end = time.perf_counter()

    trace.on_request_start.append(on_start)
    trace.on_request_chunk_sent.append(on_chunk)
    trace.on_request_end.append(on_end)
    return trace


def capturing_response(traffic: RpcTraffic) -> type[aiohttp.ClientResponse]:
    """A response class that keeps the Web3 RPC API's answers while ``spooling`` (for the
    floor)."""

    class CapturingResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            body = await super().read()
            if traffic.spooling and self.status == 200 and WEB3_PATH in self.url.path:
                traffic.answers.append(body)
            return body

    return CapturingResponse


# -- the floor of a steady poll -----------------------------------------------------------------


def _aggregate_words(result: bytes) -> Iterator[int | None]:
    """The return words of an ``aggregate3`` answer, ``(bool success, bytes data)[]``, sliced by
    hand: the first word of each successful return (None for a failed call)."""
    base = int.from_bytes(result[0:32]) + 32
    count = int.from_bytes(result[base - 32 : base])
    for i in range(count):
        item = base + int.from_bytes(result[base + 32 * i : base + 32 * i + 32])
        success = result[item + 31] == 1
        data = item + int.from_bytes(result[item + 32 : item + 64])
        size = int.from_bytes(result[data : data + 32])
        yield int.from_bytes(result[data + 32 : data + 64]) if success and size >= 32 else None


def floor_poll(
    answers: list[bytes], previous: dict[tuple[int, int], int | None]
) -> tuple[float, int, int]:
    """The answers decoded (orjson, ABI sliced by hand) and compared with ``previous`` (updated
    in place), GC off: (CPU seconds, values, changes). Keys are (call id from the poll's first,
    index in the aggregate), so the same read lands on the same key poll after poll."""
    gc_was = gc.isenabled()
    gc.disable()
    started = time.process_time()
    values = changes = 0
    decoded: list[tuple[int, str]] = []
    for body in answers:
        parsed = orjson.loads(body)
        for answer in parsed if isinstance(parsed, list) else [parsed]:
            result = answer.get("result")
            if isinstance(result, str) and len(result) > 130:
                decoded.append((int(answer["id"]), result))
    first = min((i for i, _ in decoded), default=0)
    for call_id, result in decoded:
        for index, word in enumerate(_aggregate_words(bytes.fromhex(result[2:]))):
            key = (call_id - first, index)
            values += 1
            if previous.get(key, -1) != word:
                previous[key] = word
                changes += 1
    cpu_s = time.process_time() - started
    if gc_was:
        gc.enable()
    return cpu_s, values, changes


def state_memory_mib(pairs: int, holdings: int, wallets: int) -> float:
    """The floor's memory: the values read, as plain dicts keyed by address strings (traced
    allocations at their peak)."""
    tracemalloc.start()
    wallet = [f"0x{i:040x}" for i in range(wallets)]
    tokens = max(1, holdings // max(1, wallets))
    spenders = max(1, pairs // max(1, holdings))
    token = [f"0x{i + 1:040x}" for i in range(tokens)]
    spender = [f"0x{i + 2:040x}" for i in range(spenders)]
    allowances = {(w, t, s): 2**255 + 1 for w in wallet for t in token for s in spender}
    balances = {(w, t): 2**200 + 1 for w in wallet for t in token}
    natives = {w: 2**100 + 1 for w in wallet}
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del allowances, balances, natives
    return peak / 2**20


# -- the run -------------------------------------------------------------------------------------


def _simulator_state(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_simulator/state", timeout=30) as reply:  # noqa: S310 (loopback)
        data: dict[str, Any] = json.loads(reply.read())
    return {"requests": data["requests"], "by_status": data["responses_by_status"]}


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    started_rss = rss_mib()
    config = parse_config(spec["config"])
    traffic = RpcTraffic()
    registry = CollectorRegistry(auto_describe=True)
    instruments = Instruments(registry, version=__version__)
    profile_dir = Path(spec["profile_dir"]) if spec.get("profile_dir") else None
    polls: list[dict[str, Any]] = []
    previous: dict[tuple[int, int], int | None] = {}
    async with (
        open_store(config) as store,
        open_client(
            config,
            None,
            response_class=capturing_response(traffic),
            trace_configs=[tracing(traffic)],
        ) as client,
    ):
        monitor = make_monitor(
            config, None, client=client, store=store, instruments=instruments, clock=utc_now
        )
        await monitor.restore()
        for index, kind in enumerate(spec["polls"]):
            traffic.take()
            traffic.answers.clear()
            traffic.spooling = True
            sim_before = _simulator_state(spec["base_url"])
            profiler = None
            if profile_dir is not None:
                name = f"discovery-poll{index + 1}-{kind}.txt"
                profiler = profiling.start(os.getpid(), profile_dir / name)
            reset_peak()
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            await monitor.poll_cycle()
            cpu_s = time.process_time() - cpu_start
            wall_s = time.perf_counter() - wall_start
            peak = peak_mib()
            profiling.stop(profiler)
            traffic.spooling = False
            sim_after = _simulator_state(spec["base_url"])
            taken = traffic.take()
            answers, traffic.answers = traffic.answers, []
            if kind == "steady" and not previous:
                # Nothing changed since the first poll: its state is this poll's answers.
                floor_poll(answers, previous)
            # The first poll's reads (token metadata among them) are keyed otherwise: its
            # floor compares with nothing.
            floor_cpu_s, floor_values, floor_changes = floor_poll(
                answers, previous if kind == "steady" else {}
            )
            del answers
            statuses = {
                status: n - sim_before["by_status"].get(status, 0)
                for status, n in sim_after["by_status"].items()
            }
            (status,) = monitor.discovery_status() or (None,)
            view = monitor.view
            polls.append(
                {
                    "kind": kind,
                    "index": index,
                    "cpu_s": cpu_s,
                    "wall_s": wall_s,
                    "peak_mib": peak,
                    "rss_after_mib": rss_mib(),
                    **taken,
                    "requests": sim_after["requests"] - sim_before["requests"],
                    "responses_by_status": statuses,
                    "floor_cpu_s": floor_cpu_s,
                    "floor_values": floor_values,
                    "floor_changes": floor_changes,
                    "pairs": status.pairs if status else None,
                    "unreadable": status.unreadable if status else None,
                    "head_block": status.head_block if status else None,
                    "scanned_to": status.scanned_to if status else None,
                    "scanning": status.scanning if status else None,
                    "multicall": status.multicall if status else None,
                    "last_error": status.last_error if status else None,
                    "allowances": len(view.snapshot.allowances) if view else None,
                    "balances": len(view.snapshot.balances) if view else None,
                }
            )
            print(
                f"    discovery poll {index + 1} ({kind}): {cpu_s:.2f} s CPU, {wall_s:.1f} s "
                f"wall, {taken['http_requests']} RPC requests {taken['calls']}, "
                f"peak {peak:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    return {
        "rss_at_start_mib": started_rss,
        "floor_memory_mib": state_memory_mib(spec["pairs"], spec["holdings"], spec["wallets"]),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "polls": polls,
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.load(sys.stdin)
    result = asyncio.run(main_async(spec))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
