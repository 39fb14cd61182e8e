"""The poll cycle of the daemon: poll, record, evaluate risk, publish a new view.

``Monitor`` owns no resources: it is handed a client, a store, a price source and the
metric instruments, and is driven by the scheduler (``monitor.daemon.run``). One cycle never
raises: upstream failures, store failures and timeouts are counted, logged and reflected in
the published view, and the previous view stays in place when nothing new is known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from monitor.config import Config
from monitor.daemon.metrics import Instruments, StateText, render_state
from monitor.daemon.view import MonitorView
from monitor.domain.model import PollResult, Token
from monitor.domain.snapshot import Snapshot
from monitor.errors import StoreError
from monitor.oneinch.client import BalanceClient
from monitor.poller import poll_once
from monitor.risk.exploits import ExploitList
from monitor.risk.incremental import RiskEvaluator
from monitor.risk.prices import PriceSource
from monitor.risk.rules import FRESH_CHANGES, RiskReport, spender_index
from monitor.store.snapshots import RecordedPoll, SqlSnapshotStore

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Monitor:
    """Runs poll cycles and publishes the resulting ``MonitorView``."""

    def __init__(
        self,
        *,
        config: Config,
        client: BalanceClient,
        store: SqlSnapshotStore,
        prices: PriceSource | None,
        exploits: ExploitList,
        instruments: Instruments,
        clock: Clock,
        poll_timeout_s: float,
    ) -> None:
        self._config = config
        self._client = client
        self._store = store
        self._prices = prices
        self._instruments = instruments
        self._clock = clock
        self._poll_timeout_s = poll_timeout_s
        self._tokens: dict[tuple[int, str], Token] = {}
        self._spenders = spender_index(config.chains)
        self._evaluator = RiskEvaluator(
            spenders=self._spenders, exploits=exploits, settings=config.risk
        )
        self._view = MonitorView(
            wallet_labels={w.address: w.label for w in config.wallets if w.label},
            spender_labels={
                (c.id, s.address): s.label for c in config.chains for s in c.spenders if s.label
            },
            unlimited_threshold=config.risk.unlimited_threshold,
            poll_interval_s=config.poll.interval_s,
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

    async def restore(self) -> None:
        """Publish the state stored by earlier runs, so metrics do not blink on restart."""
        snapshot = await self._store.latest()
        self._tokens = await self._store.tokens()
        last_success = await self._store.last_successes()
        upstream = await self._store.upstream_status()
        report = await self._evaluate(snapshot, self._clock())
        await self._publish(
            replace(
                self._view,
                snapshot=snapshot,
                tokens=dict(self._tokens),
                findings=report.findings,
                exposures=report.exposures,
                last_success=last_success,
                upstream_up=upstream,
            )
        )

    # -- one cycle ----------------------------------------------------------------------------

    async def poll_cycle(self) -> None:
        """Poll once under the hard timeout, record, evaluate, publish. Never raises."""
        started = time.monotonic()
        started_at = self._clock()
        self._running = asyncio.current_task()
        self._instruments.polls.inc()
        try:
            result = await asyncio.wait_for(
                poll_once(self._client, self._config, clock=self._clock),
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
                await self._after_poll(result)
            except Exception:
                # A bug or an unforeseen failure must not stop the polling: count it, log it.
                log.exception("poll cycle failed after polling")
                self._instruments.polls_failed.labels(reason="internal").inc()
        finally:
            self._running = None
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

    async def _after_poll(self, result: PollResult) -> None:
        if result.failures:
            reason = result.failures[0].error_reason or "upstream"
            self._instruments.polls_failed.labels(reason=reason).inc()
        try:
            recorded = await self._store.record_poll(result)
        except StoreError as exc:
            log.error("poll not recorded: %s", exc)
            self._instruments.polls_failed.labels(reason="store").inc()
            await self._mark_upstream(result)
            return
        for event in recorded.events:
            self._instruments.allowance_changes.labels(change=event.change.value).inc()
        self._tokens.update(await asyncio.to_thread(_tokens_of, result))
        now = self._clock()
        report = await self._evaluate(recorded.snapshot, now)
        try:
            await self._store.sync_findings(report.findings, now=now)
        except StoreError as exc:
            log.error("findings not recorded: %s", exc)
        last_success = dict(self._view.last_success)
        for (chain_id, spender), ok in _scope_outcomes(result).items():
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
                upstream_up=_chain_outcomes(result),
                last_poll_at=result.finished_at,
                last_poll_outcome=recorded.outcome,
            )
        )
        _log_poll(recorded, result)

    async def _evaluate(self, snapshot: Snapshot, now: datetime) -> RiskReport:
        prices = await self._usd_prices(snapshot)
        try:
            # A first poll "grants" every approval it discovers; those are not fresh.
            recent = await self._store.events(
                since=now - timedelta(hours=self._config.risk.fresh_approval_hours),
                changes=sorted(FRESH_CHANGES),
                after_poll=await self._store.baseline_poll_id(),
                latest_per_key=True,
            )
        except StoreError as exc:
            log.warning("recent changes unavailable for the fresh-approval rule: %s", exc)
            recent = []
        # Re-derives only what changed since the previous evaluation (the same report as
        # rules.evaluate), in a worker thread all the same: a first poll is all change.
        return await asyncio.to_thread(
            self._evaluator.evaluate,
            snapshot,
            tokens=dict(self._tokens),
            prices_usd=prices,
            recent_events=recent,
            now=now,
        )

    async def _usd_prices(self, snapshot: Snapshot) -> Mapping[tuple[int, str], Decimal]:
        if self._prices is None:
            return {}
        wanted = await asyncio.to_thread(_tokens_at_risk, snapshot)
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
                upstream_up=_chain_outcomes(result),
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


def _tokens_of(result: PollResult) -> dict[tuple[int, str], Token]:
    return {(p.chain_id, p.token.address): p.token for p in result.positions}


def _tokens_at_risk(snapshot: Snapshot) -> dict[int, set[str]]:
    """The tokens, by chain, that some wallet both holds and has approved: those worth a
    price (a scan of every allowance, so it runs in a worker thread)."""
    wanted: dict[int, set[str]] = {}
    balances = snapshot.balances
    for chain_id, wallet, token, _spender in snapshot.allowances:
        if (chain_id, wallet, token) in balances:
            wanted.setdefault(chain_id, set()).add(token)
    return wanted


def _scope_outcomes(result: PollResult) -> dict[tuple[int, str], bool]:
    outcomes: dict[tuple[int, str], bool] = {}
    for batch in result.batches:
        key = (batch.chain_id, batch.spender)
        outcomes[key] = outcomes.get(key, True) and batch.ok
    return outcomes


def _chain_outcomes(result: PollResult) -> dict[int, bool]:
    outcomes: dict[int, bool] = {}
    for batch in result.batches:
        outcomes[batch.chain_id] = outcomes.get(batch.chain_id, True) and batch.ok
    return outcomes


def _log_poll(recorded: RecordedPoll, result: PollResult) -> None:
    log.info(
        "poll %d %s: %d batches (%d failed), %d positions, %d changes, %d values written",
        recorded.poll_id,
        recorded.outcome,
        len(result.batches),
        len(result.failures),
        len(result.positions),
        len(recorded.events),
        recorded.versions_written,
    )
