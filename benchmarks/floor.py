"""The CPU floor of a poll: decode the very response bytes the monitor received with the
fastest JSON parser available (orjson), and compare them with the previous state held in
plain dicts. Nothing is validated, converted or stored: no poll can cost less than this.

The same comparison with the standard library's parser (``STDLIB_PARSER``) is the decoding
part of the floor of ``once`` as a whole process, which is measured with no extra installed."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.storage import FloorRow

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
