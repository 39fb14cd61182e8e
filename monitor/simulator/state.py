"""The mutable side of a running simulator: poll counters, the rate limiter, the request log.

Poll count (docs/simulator.md has the full definition): per (chain, spender, wallet), the
number of aggregated-endpoint answers served successfully that included the wallet. An
answer for a wallet reflects poll ``count + 1``; once served, the count becomes that number.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from monitor.domain.addresses import to_checksum
from monitor.simulator.faults import FaultBook
from monitor.simulator.generator import GeneratedLedger
from monitor.simulator.ledger import Ledger, ScenarioLedger
from monitor.simulator.model import Scenario, TokenSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """One request to a 1inch path as the simulator saw it (never the API key itself).

    ``received_at`` is the simulator clock at arrival; ``status`` is what was answered, or 499
    when the client had gone before the answer could be written. ``query_string`` has any
    ``apiKey`` value masked.
    """

    received_at: float
    method: str
    path: str
    query_string: str
    status: int
    authorization_present: bool
    request_id: str


class UpstreamRateLimit:
    """At most ``per_second`` arrivals in any sliding window of ``1 - tolerance_s`` seconds.

    Every arrival counts, including the ones refused: a client that keeps hammering while
    limited stays limited, as with real token-bucket limiters.
    """

    def __init__(self, per_second: int, tolerance_s: float) -> None:
        self._per_second = per_second
        self._window_s = 1.0 - tolerance_s
        self._arrivals: deque[float] = deque()

    def admit(self, now: float) -> bool:
        """Register an arrival at ``now``; False when it is over the limit."""
        horizon = now - self._window_s
        while self._arrivals and self._arrivals[0] <= horizon:
            self._arrivals.popleft()
        allowed = len(self._arrivals) < self._per_second
        self._arrivals.append(now)
        return allowed


class PollCounter:
    """Poll counts per (chain, spender, wallet), lowercase addresses."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, str, str], int] = {}
        self._wallet_max: dict[tuple[int, str], int] = {}
        self._chain_max: dict[int, int] = {}

    def count(self, chain_id: int, spender: str, wallet: str) -> int:
        """Aggregated answers served so far for this (chain, spender, wallet)."""
        return self._counts.get((chain_id, spender, wallet), 0)

    def next_poll(self, chain_id: int, spender: str, wallet: str) -> int:
        """The poll an aggregated answer for this wallet reflects now."""
        return self.count(chain_id, spender, wallet) + 1

    def current(self, chain_id: int, spender: str | None, wallet: str) -> int:
        """The poll other endpoints read: the current count, at least 1. Without a spender,
        the highest count of the wallet over every spender of the chain."""
        if spender is None:
            count = self._wallet_max.get((chain_id, wallet), 0)
        else:
            count = self.count(chain_id, spender, wallet)
        return max(count, 1)

    def chain_current(self, chain_id: int) -> int:
        """The highest count on the chain, at least 1 (the poll of requests without wallets)."""
        return max(self._chain_max.get(chain_id, 0), 1)

    def served(self, chain_id: int, spender: str, wallet: str, poll: int) -> None:
        """An aggregated answer reflecting ``poll`` reached the client."""
        key = (chain_id, spender, wallet)
        if poll > self._counts.get(key, 0):
            self._counts[key] = poll
        if poll > self._wallet_max.get((chain_id, wallet), 0):
            self._wallet_max[(chain_id, wallet)] = poll
        if poll > self._chain_max.get(chain_id, 0):
            self._chain_max[chain_id] = poll

    def snapshot(self) -> list[dict[str, object]]:
        """Every counter as JSON."""
        return [
            {"chain": chain_id, "spender": spender, "wallet": wallet, "count": count}
            for (chain_id, spender, wallet), count in sorted(self._counts.items())
        ]


class SimulatorState:
    """Everything one simulator app knows and remembers. Created by ``make_app``."""

    def __init__(self, scenario: Scenario, clock: Callable[[], float]) -> None:
        self.scenario = scenario
        self.clock = clock
        self.started_at = clock()
        self.ledger: Ledger = (
            GeneratedLedger(scenario) if scenario.generate is not None else ScenarioLedger(scenario)
        )
        self.polls = PollCounter()
        self.faults = FaultBook(scenario.faults)
        self.requests: list[RecordedRequest] = []
        self.limiter = (
            UpstreamRateLimit(scenario.requests_per_second, scenario.rate_limit_tolerance_s)
            if scenario.requests_per_second is not None
            else None
        )
        self.tokens: dict[int, dict[str, TokenSpec]] = {
            chain.id: {t.address: t for t in chain.tokens} for chain in scenario.chains
        }
        self.listed: dict[int, tuple[TokenSpec, ...]] = {
            chain.id: tuple(t for t in chain.tokens if not t.custom) for chain in scenario.chains
        }
        self.native: dict[int, TokenSpec] = {chain.id: chain.native for chain in scenario.chains}
        self._checksums: dict[str, str] = {}
        self._closing = asyncio.Event()

    def elapsed_s(self, now: float) -> float:
        """Seconds between the simulator's start and ``now`` (simulator clock)."""
        return now - self.started_at

    def checksum(self, address: str) -> str:
        """EIP-55 form of a lowercase address (cached: the hash is pure Python)."""
        cached = self._checksums.get(address)
        if cached is None:
            cached = self._checksums[address] = to_checksum(address)
        return cached

    async def sleep(self, delay_s: float) -> None:
        """Sleep ``delay_s``, or less when the app shuts down (so hangs never block exit)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=delay_s)

    def close(self) -> None:
        """Wake every sleeping handler: the app is shutting down."""
        self._closing.set()


STATE = web.AppKey("simulator_state", SimulatorState)
"""Where ``make_app`` keeps the ``SimulatorState``."""
REQUEST_ID = web.RequestKey("simulator_request_id", str)
RECEIVED_AT = web.RequestKey("simulator_received_at", float)
CLIENT_GONE = web.RequestKey("simulator_client_gone", bool)
