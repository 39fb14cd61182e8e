"""The poll cycle: poll, record, evaluate risk, record findings, publish a new view.

``Monitor`` owns no resources: it is handed its ports (``monitor.ports``: a position source,
a store, a price source, a clock) and the metric instruments. The daemon's scheduler drives
``poll_cycle`` (``monitor.daemon.run``); ``once`` calls ``poll_and_record``. Both record
through ``record``, so every command that records a poll evaluates and records findings
exactly as the daemon does. One daemon cycle never raises: upstream failures, store failures
and timeouts are counted, logged and reflected in the published view, and the previous view
stays in place when nothing new is known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from monitor import collector
from monitor.chain.source import SOURCE_NAME, ChainPositions, ChainStatus
from monitor.config import ApiKey, Config
from monitor.config.exploits import bundled_exploits
from monitor.config.model import spender_index
from monitor.daemon.metrics import Instruments, StateText, render_state
from monitor.daemon.view import MonitorView
from monitor.domain.model import BatchOutcome, PollResult, Token
from monitor.domain.records import (
    DiscoveryFacts,
    RecordedPoll,
    StoredEvent,
    chain_outcomes,
    scope_outcomes,
)
from monitor.domain.snapshot import AllowanceKey, Snapshot
from monitor.errors import ConfigError, StoreError
from monitor.oneinch.client import BalanceClient
from monitor.oneinch.prices import SpotPriceSource
from monitor.poller import OneInchPositions
from monitor.ports import ApprovalFacts, Clock, PollStore, PositionSource, PriceSource, utc_now
from monitor.risk.exploits import ExploitList
from monitor.risk.incremental import RiskEvaluator
from monitor.risk.rules import (
    FRESH_CHANGES,
    RiskReport,
    disagreement_finding,
    finding_order,
    suppress,
)
from monitor.runtime import oneinch_usable, open_chain
from monitor.sources import CombinedPositions
from monitor.store.snapshots import SqlSnapshotStore

log = logging.getLogger(__name__)


RECENT_CHANGES_HOURS = 24
RECENT_CHANGES_MAX = 500
"""The view keeps the newest changes of the last day, at most this many (the status page)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedCycle:
    """What recording one poll produced: the poll, its stored record, the risk report."""

    result: PollResult
    recorded: RecordedPoll
    report: RiskReport
    findings_recorded: bool
    """False when the findings could not be written (logged): the database's findings are
    then those of an earlier poll."""

    @property
    def open_findings(self) -> int:
        return sum(1 for f in self.report.findings if not f.suppressed)


class Monitor:
    """Runs poll cycles and publishes the resulting ``MonitorView``."""

    def __init__(
        self,
        *,
        config: Config,
        source: PositionSource,
        store: PollStore,
        prices: PriceSource | None,
        exploits: ExploitList,
        instruments: Instruments,
        clock: Clock,
        poll_timeout_s: float,
        serve_view: bool = True,
        approval_facts: ApprovalFacts | None = None,
        oneinch_polled: bool = True,
        discovery_status: Callable[[], tuple[ChainStatus, ...]] | None = None,
    ) -> None:
        """``serve_view`` False (one-shot commands): no view is rendered for ``/metrics``.
        ``approval_facts``: the chain reader's knowledge of spenders and approval dates, for
        the ``eoa_spender`` and ``fresh_approval`` rules (None without discovery).
        ``oneinch_polled``: whether 1inch is asked about the configured spenders (False in
        key-free mode). ``discovery_status``: the chain reader's live per-chain status."""
        self.discovery_status: Callable[[], tuple[ChainStatus, ...]] = discovery_status or (
            lambda: ()
        )
        """Per chain with discovery: scan progress, pairs, unreadable pairs (read at
        scrape time, so a long first scan's progress shows while it runs)."""
        self._config = config
        self._source = source
        self._approval_facts = approval_facts
        self._facts = DiscoveryFacts()
        self._disagreeing: dict[AllowanceKey, dict[str, int]] = {}
        """Keys the sources read differently in the latest poll."""
        self._disagreements: dict[AllowanceKey, dict[str, int]] = {}
        """Those that also disagreed in the poll before: ``sources_disagree`` findings."""
        self._store = store
        self._prices = prices
        self._instruments = instruments
        self._clock = clock
        self._poll_timeout_s = poll_timeout_s
        self._serve_view = serve_view
        self._tokens: dict[tuple[int, str], Token] = {}
        self._batch_tokens = _BatchTokens()
        self._tokens_at_risk = _TokensAtRisk()
        self._spenders = spender_index(config.chains)
        self._evaluator = RiskEvaluator(
            spenders=self._spenders, exploits=exploits, settings=config.risk.rules
        )
        self._view = MonitorView(
            wallet_labels={w.address: w.label for w in config.wallets if w.label},
            spender_labels={
                (c.id, s.address): s.label for c in config.chains for s in c.spenders if s.label
            },
            unlimited_threshold=config.risk.unlimited_threshold,
            poll_interval_s=config.poll.interval_s,
            watched_wallets=tuple(w.address for w in config.wallets),
            watched_spenders=tuple((c.id, s.address) for c in config.chains for s in c.spenders),
            oneinch_spenders=frozenset((c.id, s.address) for c in config.chains for s in c.spenders)
            if oneinch_polled
            else frozenset(),
        )
        self._rendered = render_state(
            self._view,
            max_position_series=config.metrics.max_position_series,
            max_finding_series=config.metrics.max_finding_series,
        )
        self._stopping = False
        self.last_progress_monotonic = time.monotonic()
        """When a cycle last finished (successfully or not): the watchdog's evidence."""
        self._running: asyncio.Task[object] | None = None

    # -- the view -----------------------------------------------------------------------------

    @property
    def view(self) -> MonitorView:
        return self._view

    @property
    def state_text(self) -> StateText:
        """The state metrics of the published view, rendered (Prometheus text format) and
        kept gzip-compressed; ``bytes()`` of it inflates the text (not for the scrape path)."""
        return self._rendered.text

    async def _publish(self, view: MonitorView) -> None:
        if not self._serve_view:
            self._view = view
            return
        # Rendering hundreds of thousands of series is CPU work: off the loop, so that scrapes
        # and the poll itself keep being served meanwhile.
        rendered = await asyncio.to_thread(
            render_state,
            view,
            max_position_series=self._config.metrics.max_position_series,
            max_finding_series=self._config.metrics.max_finding_series,
            previous=self._rendered,
        )
        # Counted once per view built, not again while a part is reused.
        if rendered.positions is not self._rendered.positions and rendered.positions.dropped:
            self._instruments.position_series_dropped.inc(rendered.positions.dropped)
        if rendered.findings is not self._rendered.findings and rendered.findings.dropped:
            self._instruments.finding_series_dropped.inc(rendered.findings.dropped)
        # No await between the two: readers see the old view and text or the new ones.
        self._view, self._rendered = view, rendered

    # -- start-up -----------------------------------------------------------------------------

    async def load_context(self) -> None:
        """Load what recording a poll needs from earlier runs, and no more: the chain
        reader's facts (codeless spenders, approval dates) and the tokens' metadata. What
        ``once`` restores: it serves no view, so the stored snapshot need not be evaluated
        (the poll's own snapshot is, once recorded), and the store reads the snapshot it
        compares with itself."""
        if self._approval_facts is not None:
            self._facts = await self._approval_facts.load()
        self._tokens = await self._store.tokens()

    async def restore(self) -> None:
        """Publish the state stored by earlier runs, so metrics do not blink on restart."""
        await self.load_context()
        snapshot = await self._store.latest()
        last_success = await self._store.last_successes()
        upstream = await self._store.upstream_status()
        last_poll = await self._store.last_poll()
        now = self._clock()
        report = await self._evaluate(snapshot, now)
        await self._publish(
            replace(
                self._view,
                snapshot=snapshot,
                tokens=dict(self._tokens),
                findings=report.findings,
                exposures=report.exposures,
                last_success=last_success,
                upstream_up=upstream,
                last_poll_at=last_poll[0] if last_poll else None,
                last_poll_outcome=last_poll[1] if last_poll else None,
                recent_changes=await self._recent_changes(now),
                discovered=self._facts.discovered,
                approved_at=self._facts.approved_at,
            )
        )
        # The state just loaded lives long: the collector need not traverse it at every poll.
        collector.settle()
        # The restore was progress: the watchdog's allowance for the first poll starts now.
        self.last_progress_monotonic = time.monotonic()

    # -- one cycle ----------------------------------------------------------------------------

    async def poll_cycle(self) -> None:
        """Poll once under the hard timeout, record, evaluate, publish. Never raises."""
        started = time.monotonic()
        started_at = self._clock()
        self._running = asyncio.current_task()
        self._instruments.polls.inc()
        try:
            result = await asyncio.wait_for(
                self._source.poll(),
                timeout=self._poll_timeout_s,
            )
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Cancelled by drain() at shutdown: a failed poll, not an error of the scheduler.
            log.warning("poll cancelled at shutdown")
            self._instruments.polls_failed.labels(reason="shutdown").inc()
            await asyncio.shield(self._record_failure(started_at, "poll cancelled at shutdown"))
        except TimeoutError:
            log.error("poll did not finish within %.0fs; abandoned", self._poll_timeout_s)
            self._instruments.polls_failed.labels(reason="timeout").inc()
            await self._record_failure(
                started_at, f"poll timed out after {self._poll_timeout_s:g}s"
            )
            await self._mark_upstream_down()
        else:
            try:
                await self._after_poll(result, started)
            except Exception:
                # A bug or an unforeseen failure must not stop the polling: count it, log it.
                log.exception("poll cycle failed after polling")
                self._instruments.polls_failed.labels(reason="internal").inc()
        finally:
            self._running = None
            # The heap has stopped growing: the full collection that was deferred, if due.
            # Part of the cycle, and timed with it.
            collector.at_poll_boundary()
            self._instruments.poll_duration.observe(time.monotonic() - started)
            self.last_progress_monotonic = time.monotonic()

    async def drain(self, grace_s: float) -> bool:
        """Wait up to ``grace_s`` for the running cycle; cancel it after. True if it finished."""
        self._stopping = True
        task = self._running
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if done:
            return True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False

    async def _after_poll(self, result: PollResult, started_monotonic: float) -> None:
        if result.failures:
            reason = result.failures[0].error_reason or "upstream"
            self._instruments.polls_failed.labels(reason=reason).inc()
        try:
            cycle = await self.record(result)
        except StoreError as exc:
            log.error("poll not recorded: %s", exc)
            self._instruments.polls_failed.labels(reason="store").inc()
            await self._mark_upstream(result)
            return
        _log_poll(cycle, time.monotonic() - started_monotonic)

    async def poll_and_record(
        self,
        *,
        on_start: Callable[[int], None] | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> RecordedCycle:
        """One poll of the source (progress through ``on_start``/``on_batch``, see
        ``PositionSource.poll``), then ``record``: what ``once`` does, with no timeout."""
        return await self.record(await self._source.poll(on_start=on_start, on_batch=on_batch))

    async def record(self, result: PollResult) -> RecordedCycle:
        """Record a poll, evaluate the risk rules over the new snapshot, record the findings
        and publish the new view. Raises ``StoreError`` when the poll could not be recorded
        (nothing is published then); a failure to record the findings is logged and
        reported in the result instead, as the poll itself is stored."""
        recorded = await self._store.record_poll(result)
        if self._approval_facts is not None:
            self._facts = self._approval_facts.facts()
        disagreeing = {key: dict(amounts) for key, amounts in result.disagreements.items()}
        # A finding only when the same key disagrees again: one poll's difference may be
        # the sources reading a block apart.
        self._disagreements = {
            key: amounts for key, amounts in disagreeing.items() if key in self._disagreeing
        }
        self._disagreeing = disagreeing
        if recorded.changes and not await self._is_baseline(recorded.poll_id):
            for event in recorded.changes:
                self._instruments.count_change(event.change.value)
        self._tokens.update(await asyncio.to_thread(self._batch_tokens.of, result))
        now = self._clock()
        report = await self._evaluate(recorded.snapshot, now)
        findings_recorded = True
        try:
            await self._store.sync_findings(report.findings, now=now)
        except StoreError as exc:
            log.error("findings not recorded: %s", exc)
            findings_recorded = False
        last_success = dict(self._view.last_success)
        for (chain_id, spender), ok in scope_outcomes(result).items():
            if ok:
                last_success[(chain_id, spender)] = result.finished_at
        await self._publish(
            replace(
                self._view,
                snapshot=recorded.snapshot,
                tokens=dict(self._tokens),
                findings=report.findings,
                exposures=report.exposures,
                last_success=last_success,
                upstream_up=chain_outcomes(scope_outcomes(result)),
                last_poll_at=result.finished_at,
                last_poll_outcome=recorded.outcome,
                recent_changes=await self._recent_changes(now),
                discovered=self._facts.discovered,
                approved_at=self._facts.approved_at,
            )
        )
        return RecordedCycle(
            result=result, recorded=recorded, report=report, findings_recorded=findings_recorded
        )

    async def _is_baseline(self, poll_id: int) -> bool:
        """Whether ``poll_id`` is the baseline poll, whose "changes" are the first
        observations of a new install, not changes: not counted as such (a fresh install's
        every approval would fire the approval-granted alert). Unknown counts as no."""
        try:
            return await self._store.baseline_poll_id() == poll_id
        except StoreError as exc:
            log.warning("baseline unknown, the poll's changes are counted: %s", exc)
            return False

    async def _changes_after_baseline(self, **filters: Any) -> list[StoredEvent]:
        """Recorded changes after the baseline poll, whose "grants" are first observations,
        not changes. Raises ``StoreError`` when either cannot be read: without the baseline,
        every first observation would pass for a change."""
        baseline = await self._store.baseline_poll_id()
        return await self._store.events(after_poll=baseline, **filters)

    async def _recent_changes(self, now: datetime) -> tuple[StoredEvent, ...]:
        """The newest changes of the last day for the status page, newest first (a first
        poll's baseline "grants" are not changes)."""
        if not self._serve_view:
            return ()
        try:
            events = await self._changes_after_baseline(
                since=now - timedelta(hours=RECENT_CHANGES_HOURS), limit=RECENT_CHANGES_MAX
            )
        except StoreError as exc:
            log.warning("recent changes unavailable for the status page: %s", exc)
            return self._view.recent_changes
        return tuple(reversed(events))

    async def _evaluate(self, snapshot: Snapshot, now: datetime) -> RiskReport:
        prices = await self._usd_prices(snapshot)
        try:
            # A first poll "grants" every approval it discovers; those are not fresh.
            recent = await self._changes_after_baseline(
                since=now - timedelta(hours=self._config.risk.fresh_approval_hours),
                changes=sorted(FRESH_CHANGES),
                latest_per_key=True,
            )
        except StoreError as exc:
            log.warning("recent changes unavailable for the fresh-approval rule: %s", exc)
            recent = []
        # Re-derives only what changed since the previous evaluation (the same report as
        # rules.evaluate), in a worker thread all the same: a first poll is all change.
        report = await asyncio.to_thread(
            self._evaluator.evaluate,
            snapshot,
            tokens=dict(self._tokens),
            prices_usd=prices,
            recent_events=recent,
            now=now,
            codeless_spenders=self._facts.codeless_spenders,
            approved_at=self._facts.approved_at,
        )
        if not self._disagreements:
            return report
        tokens = self._tokens
        extra = [
            suppress(
                disagreement_finding(key, amounts, tokens, self._spenders),
                self._config.risk.ignore,
                now=now,
            )
            for key, amounts in sorted(self._disagreements.items())
        ]
        return replace(
            report, findings=tuple(sorted((*report.findings, *extra), key=finding_order))
        )

    async def _usd_prices(self, snapshot: Snapshot) -> Mapping[tuple[int, str], Decimal]:
        if self._prices is None:
            return {}
        wanted = await asyncio.to_thread(self._tokens_at_risk.of, snapshot)
        prices: dict[tuple[int, str], Decimal] = {}
        for chain_id, tokens in sorted(wanted.items()):
            found = await self._prices.usd_prices(chain_id, sorted(tokens))
            prices.update({(chain_id, token): price for token, price in found.items()})
        return prices

    async def _record_failure(self, started_at: datetime, error: str) -> None:
        try:
            await self._store.record_failed_poll(
                started_at=started_at, finished_at=self._clock(), error=error
            )
        except StoreError as exc:
            log.error("failed poll not recorded: %s", exc)

    async def _mark_upstream_down(self) -> None:
        await self._publish(
            replace(
                self._view,
                upstream_up={c.id: False for c in self._config.chains},
                last_poll_at=self._clock(),
                last_poll_outcome="failed",
            )
        )

    async def _mark_upstream(self, result: PollResult) -> None:
        await self._publish(
            replace(
                self._view,
                upstream_up=chain_outcomes(scope_outcomes(result)),
                last_poll_at=result.finished_at,
                last_poll_outcome="failed",
            )
        )

    # -- retention ----------------------------------------------------------------------------

    async def prune(self) -> None:
        days = self._config.database.retention_days
        if days is None:
            return
        try:
            result = await self._store.prune(older_than=self._clock() - timedelta(days=days))
        except StoreError as exc:
            log.error("prune failed: %s", exc)
            return
        log.info(
            "pruned %d polls, %d values, %d events older than %d days",
            result.polls_deleted,
            result.versions_deleted,
            result.events_deleted,
            days,
        )


class _BatchTokens:
    """The tokens of a poll's positions, batch by batch, each batch's kept with its answer's
    digest: an answer repeated byte for byte holds the very same tokens, so an unchanged
    poll walks no position for them. The merge is in batch order, as a walk over every
    position would be (the last batch naming a token gives its metadata)."""

    def __init__(self) -> None:
        self._known: dict[tuple[Any, ...], tuple[bytes, dict[tuple[int, str], Token]]] = {}

    def of(self, result: PollResult) -> dict[tuple[int, str], Token]:
        tokens: dict[tuple[int, str], Token] = {}
        known: dict[tuple[Any, ...], tuple[bytes, dict[tuple[int, str], Token]]] = {}
        for b in result.batches:
            key = (b.chain_id, b.spender, b.wallets, b.kind, b.source)
            digest, cached = b.answer_digest, self._known.get(key)
            if digest is not None and cached is not None and cached[0] == digest:
                found = cached[1]
            else:
                found = {(p.chain_id, p.token.address): p.token for p in b.positions}
            if digest is not None:
                known[key] = (digest, found)
            tokens.update(found)
        self._known = known
        return tokens


class _TokensAtRisk:
    """The tokens, by chain, that some wallet both holds and has approved: those worth a
    price. A scan of every allowance (run in a worker thread), made again only for a new
    snapshot: an unchanged poll hands back the very same one."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._wanted: dict[int, frozenset[str]] = {}

    def of(self, snapshot: Snapshot) -> dict[int, frozenset[str]]:
        if snapshot is not self._snapshot:
            self._wanted = _tokens_at_risk(snapshot)
            self._snapshot = snapshot
        return self._wanted


def _tokens_at_risk(snapshot: Snapshot) -> dict[int, frozenset[str]]:
    wanted: dict[int, set[str]] = {}
    balances = snapshot.balances
    for chain_id, wallet, token, _spender in snapshot.allowances:
        if (chain_id, wallet, token) in balances:
            wanted.setdefault(chain_id, set()).add(token)
    return {chain_id: frozenset(tokens) for chain_id, tokens in wanted.items()}


def _log_poll(cycle: RecordedCycle, duration_s: float) -> None:
    recorded, result = cycle.recorded, cycle.result
    log.info(
        "poll %d %s in %.1fs: %d positions, %d changes, %d open findings; "
        "%d batches (%d failed), %d values written",
        recorded.poll_id,
        recorded.outcome,
        duration_s,
        result.position_count,
        recorded.change_count,
        cycle.open_findings,
        len(result.batches),
        len(result.failures),
        recorded.versions_written,
    )


def build_monitor(
    config: Config,
    *,
    client: BalanceClient,
    store: PollStore,
    instruments: Instruments,
    clock: Clock,
    serve_view: bool = True,
    chain: ChainPositions | None = None,
    oneinch: bool = True,
) -> Monitor:
    """The ``Monitor`` of ``config``: its sources, price source, exploit list and limits.

    ``oneinch`` False (no key for the real API: key-free mode): 1inch is neither polled nor
    asked for prices, and ``chain`` (the chain reader) must serve alone.
    """
    prices = (
        SpotPriceSource(client, ttl_s=config.risk.prices.ttl_s, wait_s=config.risk.prices.timeout_s)
        if config.risk.prices.enabled and oneinch
        else None
    )
    sources: list[PositionSource] = []
    if oneinch and any(c.spenders for c in config.chains):
        sources.append(
            OneInchPositions(
                client,
                config,
                clock=clock,
                foreign_tokens=chain.discovered_tokens if chain is not None else None,
            )
        )
    if chain is not None:
        sources.append(chain)
    if not sources:
        raise ConfigError(
            "",
            "nothing to poll: the 1inch API needs a key (ONEINCH_API_KEY) for the configured "
            "spenders, and no chain has discovery with a JSON-RPC endpoint",
        )
    return Monitor(
        config=config,
        source=sources[0]
        if len(sources) == 1
        else CombinedPositions(sources, clock=clock, prefer=SOURCE_NAME),
        approval_facts=chain,
        oneinch_polled=oneinch,
        discovery_status=chain.status if chain is not None else None,
        store=store,
        prices=prices,
        # The denylist was read and validated with the config: not read a second time.
        exploits=bundled_exploits().merged(config.risk.denylist),
        instruments=instruments,
        clock=clock,
        poll_timeout_s=config.poll.timeout_s,
        serve_view=serve_view,
    )


def make_monitor(
    config: Config,
    api_key: ApiKey | None,
    *,
    client: BalanceClient,
    store: SqlSnapshotStore,
    instruments: Instruments,
    clock: Clock = utc_now,
    serve_view: bool = True,
) -> Monitor:
    """``build_monitor`` with every source ``config`` can use: 1inch when it can answer (a
    key, or the simulator), the chain reader on every chain with discovery."""
    return build_monitor(
        config,
        client=client,
        store=store,
        instruments=instruments,
        clock=clock,
        serve_view=serve_view,
        chain=open_chain(
            config, api_key, client, store, clock=clock, on_request=instruments.count_rpc_request
        ),
        oneinch=oneinch_usable(config, api_key),
    )
