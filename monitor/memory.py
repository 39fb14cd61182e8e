"""In-memory adapters of the poll cycle's ports (``monitor.ports``), for tests and dry runs.

``MemoryPositions`` is a portfolio held in dicts that a test changes between polls (grants,
revokes, balances, failing scopes); ``MemoryStore`` records polls, events and findings in
lists with the semantics of the SQL store (``tests/test_poll_store_contract.py`` runs one
suite against both); ``StaticPriceSource`` answers from fixed prices; ``ManualClock`` is a
clock a test moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from monitor.domain.model import BatchOutcome, PollResult, Position, Token
from monitor.domain.records import (
    FindingChanges,
    PruneResult,
    RecordedPoll,
    StoredEvent,
    chain_outcomes,
    poll_outcome,
    scope_outcomes,
)
from monitor.domain.snapshot import (
    EMPTY_SNAPSHOT,
    Change,
    Snapshot,
    apply_events,
    diff_snapshots,
    observe_changes,
)
from monitor.errors import StoreError
from monitor.risk.model import FindingKey
from monitor.risk.rules import Finding


class ManualClock:
    """A ``Clock`` that stands still until a test moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class StaticPriceSource:
    """Fixed prices by (chain_id, lowercase token): the in-memory ``PriceSource``."""

    def __init__(self, prices: Mapping[tuple[int, str], Decimal]) -> None:
        self._prices = {(chain_id, token.lower()): p for (chain_id, token), p in prices.items()}

    async def usd_prices(self, chain_id: int, tokens: Sequence[str]) -> dict[str, Decimal]:
        found: dict[str, Decimal] = {}
        for token in tokens:
            price = self._prices.get((chain_id, token.lower()))
            if price is not None:
                found[token.lower()] = price
        return found


class MemoryPositions:
    """A ``PositionSource`` over a portfolio in memory.

    ``watch`` lists what each poll asks: (chain_id, spender, wallets), one batch each, all
    lowercase. Values are set with ``set_allowance``/``set_balance`` (zero removes them), and
    a scope can be made to fail with ``fail``. Each poll advances ``clock`` by nothing: the
    test moves it.
    """

    def __init__(
        self,
        watch: Sequence[tuple[int, str, Sequence[str]]],
        tokens: Iterable[Token],
        *,
        clock: Callable[[], datetime],
        source: str = "1inch",
    ) -> None:
        """``source``: the ``source`` of its batches and positions (``1inch`` or ``chain``)."""
        self._source = source
        self._watch = [(chain_id, spender, tuple(wallets)) for chain_id, spender, wallets in watch]
        self._tokens = {(t.chain_id, t.address): t for t in tokens}
        self._allowances: dict[tuple[int, str, str, str], int] = {}
        self._balances: dict[tuple[int, str, str], int] = {}
        self._failing: set[tuple[int, str]] = set()
        self._clock = clock
        self.polls = 0

    def set_allowance(
        self, chain_id: int, wallet: str, token: str, spender: str, amount: int
    ) -> None:
        self._allowances[(chain_id, wallet, token, spender)] = amount

    def set_balance(self, chain_id: int, wallet: str, token: str, amount: int) -> None:
        self._balances[(chain_id, wallet, token)] = amount

    def fail(self, chain_id: int, spender: str, *, failing: bool = True) -> None:
        """Make the batches of (chain_id, spender) fail (or answer again)."""
        if failing:
            self._failing.add((chain_id, spender))
        else:
            self._failing.discard((chain_id, spender))

    async def poll(
        self,
        *,
        on_start: Callable[[int], None] | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> PollResult:
        self.polls += 1
        started_at = self._clock()
        if on_start is not None:
            on_start(len(self._watch))
        batches = []
        for chain_id, spender, wallets in self._watch:
            batch = self._batch(chain_id, spender, wallets)
            if on_batch is not None:
                on_batch(batch)
            batches.append(batch)
        return PollResult(started_at=started_at, finished_at=self._clock(), batches=tuple(batches))

    def _batch(self, chain_id: int, spender: str, wallets: tuple[str, ...]) -> BatchOutcome:
        if (chain_id, spender) in self._failing:
            return BatchOutcome(
                chain_id=chain_id,
                spender=spender,
                wallets=wallets,
                kind="aggregated",
                source=self._source,
                error="unavailable: the memory source was told to fail",
                error_reason="unavailable",
            )
        positions = []
        for (token_chain, token_address), token in self._tokens.items():
            if token_chain != chain_id:
                continue
            for wallet in wallets:
                balance = self._balances.get((chain_id, wallet, token_address), 0)
                allowance = self._allowances.get((chain_id, wallet, token_address, spender), 0)
                if balance or (allowance and not token.is_native):
                    positions.append(
                        Position(
                            chain_id=chain_id,
                            wallet=wallet,
                            spender=spender,
                            token=token,
                            balance=balance,
                            allowance=0 if token.is_native else allowance,
                            source=self._source,
                        )
                    )
        return BatchOutcome(
            chain_id=chain_id,
            spender=spender,
            wallets=wallets,
            kind="aggregated",
            source=self._source,
            # As the chain reader does, a non-1inch source names the tokens it read.
            tokens=None
            if self._source == "1inch"
            else frozenset(a for c, a in self._tokens if c == chain_id),
            positions=tuple(positions),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Poll:
    poll_id: int
    finished_at: datetime
    outcome: str
    scopes: dict[tuple[int, str], bool]
    """Per (chain_id, spender) it polled: did every batch of it succeed."""


@dataclass(slots=True, kw_only=True)
class _OpenFinding:
    finding: Finding
    opened_at: datetime


class MemoryStore:
    """A ``PollStore`` in memory, with the SQL store's semantics (one process only)."""

    def __init__(self, *, unlimited_threshold: int) -> None:
        self._threshold = unlimited_threshold
        self._snapshot = EMPTY_SNAPSHOT
        self._polls: list[_Poll] = []
        self._events: list[StoredEvent] = []
        self._tokens: dict[tuple[int, str], Token] = {}
        self._open: dict[FindingKey, _OpenFinding] = {}
        self.resolved: list[tuple[Finding, datetime, datetime]] = []
        """(finding, opened_at, resolved_at) of every finding resolved so far."""
        self.fail_writes = False
        """Set to make every write raise ``StoreError``, as a database that went away."""

    def _next_id(self) -> int:
        return self._polls[-1].poll_id + 1 if self._polls else 1

    def _check_writable(self) -> None:
        if self.fail_writes:
            raise StoreError("the memory store was told to fail")

    async def record_poll(self, result: PollResult) -> RecordedPoll:
        self._check_writable()
        current, events = observe_changes(
            self._snapshot, result.positions, result.coverages(), threshold=self._threshold
        )
        if not events:
            current = self._snapshot  # as the SQL store: nothing changed, the same snapshot
        poll_id = self._next_id()
        scopes = scope_outcomes(result)
        outcome = poll_outcome(result)
        self._polls.append(
            _Poll(poll_id=poll_id, finished_at=result.finished_at, outcome=outcome, scopes=scopes)
        )
        self._events.extend(
            StoredEvent(poll_id=poll_id, observed_at=result.finished_at, event=e) for e in events
        )
        for position in result.positions:
            self._remember(position.token)
        self._snapshot = current
        return RecordedPoll(
            poll_id=poll_id,
            observed_at=result.finished_at,
            outcome=outcome,
            changes=events,
            snapshot=current,
            versions_written=len(events),
        )

    def _remember(self, token: Token) -> None:
        key = (token.chain_id, token.address)
        old = self._tokens.get(key)
        if old is not None and not token.symbol and old.symbol:
            return  # a custom token's answer carries less metadata than we have
        self._tokens[key] = token

    async def record_failed_poll(
        self, *, started_at: datetime, finished_at: datetime, error: str
    ) -> int:
        self._check_writable()
        poll_id = self._next_id()
        self._polls.append(
            _Poll(poll_id=poll_id, finished_at=finished_at, outcome="failed", scopes={})
        )
        return poll_id

    async def latest(self) -> Snapshot:
        return self._snapshot

    async def tokens(self) -> dict[tuple[int, str], Token]:
        return dict(self._tokens)

    async def last_successes(self) -> dict[tuple[int, str], datetime]:
        found: dict[tuple[int, str], datetime] = {}
        for poll in self._polls:
            for scope, ok in poll.scopes.items():
                if ok:
                    found[scope] = max(found.get(scope, poll.finished_at), poll.finished_at)
        return found

    async def upstream_status(self) -> dict[int, bool]:
        newest = next((p for p in reversed(self._polls) if p.scopes), None)
        return chain_outcomes(newest.scopes) if newest else {}

    async def last_poll(self) -> tuple[datetime, str] | None:
        return (self._polls[-1].finished_at, self._polls[-1].outcome) if self._polls else None

    async def baseline_poll_id(self) -> int | None:
        observing = (p.poll_id for p in self._polls if p.outcome != "failed")
        return next(observing, None)

    async def events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        chain_id: int | None = None,
        wallet: str | None = None,
        spender: str | None = None,
        changes: Sequence[Change] | None = None,
        after_poll: int | None = None,
        latest_per_key: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        def matches(stored: StoredEvent) -> bool:
            e = stored.event
            return (
                (changes is None or e.change in changes)
                and (after_poll is None or stored.poll_id > after_poll)
                and (since is None or stored.observed_at >= since)
                and (until is None or stored.observed_at <= until)
                and (chain_id is None or e.chain_id == chain_id)
                and (wallet is None or e.wallet == wallet)
                and (spender is None or e.spender == spender)
            )

        found = [s for s in self._events if matches(s)]
        if latest_per_key:
            newest: dict[tuple[int, str, str, str | None], StoredEvent] = {}
            for stored in found:
                e = stored.event
                newest[(e.chain_id, e.wallet, e.token, e.spender)] = stored
            kept = {id(s) for s in newest.values()}
            found = [s for s in found if id(s) in kept]
        found.sort(key=lambda s: s.observed_at)  # stable: recording order within a time
        return found[-limit:] if limit is not None and limit > 0 else found

    async def sync_findings(self, found: Iterable[Finding], *, now: datetime) -> FindingChanges:
        self._check_writable()
        wanted = {f.key: f for f in found}
        opened = updated = 0
        for key, finding in wanted.items():
            current = self._open.get(key)
            if current is None:
                self._open[key] = _OpenFinding(finding=finding, opened_at=now)
                opened += 1
            elif current.finding != finding:
                current.finding = finding
                updated += 1
        gone = [key for key in self._open if key not in wanted]
        for key in gone:
            closing = self._open.pop(key)
            self.resolved.append((closing.finding, closing.opened_at, now))
        return FindingChanges(opened=opened, resolved=len(gone), updated=updated)

    @property
    def open_findings(self) -> dict[FindingKey, Finding]:
        """The findings open now, by key."""
        return {key: open_.finding for key, open_ in self._open.items()}

    async def prune(self, *, older_than: datetime) -> PruneResult:
        """Forget the polls before the last one that finished before ``older_than`` and
        observed anything (the cutoff), and their events; the cutoff becomes the baseline,
        whose events are the first observations of the values it holds."""
        self._check_writable()
        observing = [p for p in self._polls if p.finished_at < older_than and p.outcome != "failed"]
        if not observing:
            return PruneResult(
                cutoff_poll_id=None, polls_deleted=0, versions_deleted=0, events_deleted=0
            )
        cutoff = observing[-1].poll_id
        gone = [s for s in self._events if s.poll_id < cutoff]
        later_keys = set()
        superseded = 0
        for stored in reversed([s for s in self._events if s.poll_id <= cutoff]):
            e = stored.event
            key = (e.chain_id, e.wallet, e.token, e.spender)
            if key in later_keys and stored.poll_id < cutoff:
                superseded += 1
            later_keys.add(key)
        polls_gone = [p for p in self._polls if p.poll_id < cutoff]
        # As the SQL store: the cutoff becomes the baseline, whose events are the first
        # observations of every value it holds.
        at_cutoff = apply_events(
            EMPTY_SNAPSHOT, [s.event for s in self._events if s.poll_id <= cutoff]
        )
        replaced = [s for s in self._events if s.poll_id == cutoff]
        finished_at = observing[-1].finished_at
        self._events = [
            *(
                StoredEvent(poll_id=cutoff, observed_at=finished_at, event=e)
                for e in diff_snapshots(EMPTY_SNAPSHOT, at_cutoff, threshold=self._threshold)
            ),
            *(s for s in self._events if s.poll_id > cutoff),
        ]
        self._polls = [p for p in self._polls if p.poll_id >= cutoff]
        return PruneResult(
            cutoff_poll_id=cutoff,
            polls_deleted=len(polls_gone),
            versions_deleted=superseded,
            events_deleted=len(gone) + len(replaced),
        )
