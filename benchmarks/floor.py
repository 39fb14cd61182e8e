"""The CPU floor of a poll: decode the very response bytes the monitor received with the
fastest JSON parser available (orjson), and compare them with the previous state held in
plain dicts. Nothing is validated, converted or stored: no poll can cost less than this.

The same comparison with the standard library's parser (``STDLIB_PARSER``) is the decoding
part of the floor of ``once`` as a whole process, which is measured with no extra installed.

The benchmark worker computes the floor in a process of its own (``FloorProcess``): the
worker measures the monitor's peak RSS, and the floor's state and garbage, made in the same
heap between two polls, stayed in its RSS (about 100 MB at 306,000 positions)."""

from __future__ import annotations

import gc
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.storage import FloorRow, FloorWrite, make_probe

try:
    import orjson

    loads: Callable[[bytes], Any] = orjson.loads
    PARSER = f"orjson {orjson.__version__}"
except ImportError:  # the bench extra is not installed: the stdlib parser, and say so
    loads = json.loads
    PARSER = "json (stdlib; install the bench extra for orjson)"

STDLIB_PARSER: Callable[[bytes], Any] = json.loads

Body = tuple[int, str, bytes]
"""(chain_id, spender, the aggregated endpoint's response bytes)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FloorPoll:
    cpu_s: float
    changes: int
    changed_rows: list[FloorRow]


class FloorState:
    """The previous poll as plain dicts: (chain, wallet, token, spender) -> allowance text
    and (chain, wallet, token) -> balance text."""

    def __init__(self) -> None:
        self.allowances: dict[tuple[int, str, str, str], str] = {}
        self.balances: dict[tuple[int, str, str], str] = {}

    def poll(
        self, bodies: Sequence[Body], parser: Callable[[bytes], Any] | None = None
    ) -> FloorPoll:
        """Compare ``bodies`` with the previous poll's state, decoded with ``parser`` (default:
        the fastest available), and keep them as the state."""
        # A minimal implementation would not pay for the cyclic garbage collector (it only
        # builds tuples of strings), nor for the garbage the monitor left behind.
        gc.collect()
        gc.disable()
        try:
            return self._poll(bodies, parser or loads)
        finally:
            gc.enable()

    def _poll(self, bodies: Sequence[Body], parser: Callable[[bytes], Any]) -> FloorPoll:
        started = time.process_time()
        previous_allowances, previous_balances = self.allowances, self.balances
        allowances: dict[tuple[int, str, str, str], str] = {}
        balances: dict[tuple[int, str, str], str] = {}
        changed: list[FloorRow] = []
        for chain_id, spender, body in bodies:
            for token in parser(body):
                address = token["address"]
                for wallet, entry in (token["wallets"] or {}).items():
                    key = (chain_id, wallet, address, spender)
                    allowance = entry["allowance"]
                    allowances[key] = allowance
                    if previous_allowances.get(key) != allowance:
                        changed.append((chain_id, wallet, address, spender, allowance))
                    bkey = (chain_id, wallet, address)
                    if bkey not in balances:
                        balance = entry["balance"]
                        balances[bkey] = balance
                        if previous_balances.get(bkey) != balance:
                            changed.append((chain_id, wallet, address, "", balance))
        for key in previous_allowances.keys() - allowances.keys():
            changed.append((*key, "0"))
        for bkey in previous_balances.keys() - balances.keys():
            changed.append((*bkey, "", "0"))
        self.allowances, self.balances = allowances, balances
        cpu_s = time.process_time() - started
        return FloorPoll(cpu_s=cpu_s, changes=len(changed), changed_rows=changed)


def read_bodies(path: Path) -> Iterator[Body]:
    """The answers a worker's spool file holds (``benchmarks.worker.Spool``)."""
    with open(path, "rb") as f:
        while head := f.readline():
            chain_id, spender, size = head.split()
            yield int(chain_id), spender.decode(), f.read(int(size))


@dataclass(frozen=True, slots=True, kw_only=True)
class FloorFigures:
    """The floor of one poll: its comparison, the bare write of its changes and, when asked,
    the comparison again with the stdlib's parser."""

    poll: FloorPoll
    write: FloorWrite
    stdlib_cpu_s: float | None


_STATE: FloorState | None = None
"""The floor's state in its own process (``FloorProcess``)."""


def _floor_poll(
    spool: str, probe_spec: dict[str, Any], *, restarted: bool, stdlib: bool
) -> FloorFigures:
    global _STATE
    if _STATE is None:
        _STATE = FloorState()
    bodies = list(read_bodies(Path(spool)))
    if restarted and not _STATE.allowances:
        _STATE.poll(bodies)  # after a restart: the state the database already holds
    floor_poll = _STATE.poll(bodies)
    probe = make_probe(probe_spec)
    try:
        write = probe.floor_write(floor_poll.changed_rows)
    finally:
        probe.close()
    stdlib_cpu_s = _STATE.poll(bodies, STDLIB_PARSER).cpu_s if stdlib else None
    # The rows are written: only their number (``changes``) goes back to the worker.
    kept = FloorPoll(cpu_s=floor_poll.cpu_s, changes=floor_poll.changes, changed_rows=[])
    return FloorFigures(poll=kept, write=write, stdlib_cpu_s=stdlib_cpu_s)


class FloorProcess:
    """The floor of each poll, computed and written in one process of its own (started fresh,
    not forked from the worker), which keeps the floor's state from poll to poll."""

    def __init__(self, probe_spec: dict[str, Any]) -> None:
        self._probe_spec = probe_spec
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def poll(self, spool: Path, *, restarted: bool, stdlib: bool) -> FloorFigures:
        """The floor of the poll whose answers ``spool`` holds. ``restarted``: the monitor
        restarted from a database this process has not seen polled (the floor first takes
        the answers as its state); ``stdlib``: also measure the comparison with the stdlib's
        parser."""
        return self._pool.submit(
            _floor_poll, str(spool), self._probe_spec, restarted=restarted, stdlib=stdlib
        ).result()

    def close(self) -> None:
        self._pool.shutdown()
