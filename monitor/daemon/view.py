"""The immutable picture of the monitored state that ``/metrics`` and ``/`` read.

The poll cycle builds a new ``MonitorView`` after each poll and swaps it in with one
assignment; readers never wait on the API or the database and never see half an update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from monitor.domain.model import Token
from monitor.domain.records import StoredEvent
from monitor.domain.snapshot import EMPTY_SNAPSHOT, AllowanceKey, Snapshot
from monitor.risk.rules import Finding, SpenderExposure


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorView:
    snapshot: Snapshot = EMPTY_SNAPSHOT
    tokens: Mapping[tuple[int, str], Token] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    exposures: tuple[SpenderExposure, ...] = ()
    last_success: Mapping[tuple[int, str], datetime] = field(default_factory=dict)
    """Per (chain_id, spender): when a poll last observed every batch of it."""
    upstream_up: Mapping[int, bool] = field(default_factory=dict)
    """Per chain: did every batch of the last poll succeed."""
    last_poll_at: datetime | None = None
    last_poll_outcome: str | None = None
    wallet_labels: Mapping[str, str] = field(default_factory=dict)
    spender_labels: Mapping[tuple[int, str], str] = field(default_factory=dict)
    unlimited_threshold: int
    """``risk.unlimited_threshold``: at or above it an allowance is unlimited."""
    poll_interval_s: float
    """``poll.interval_s``: the status page refreshes at this pace."""
    recent_changes: tuple[StoredEvent, ...] = ()
    """Changes recorded in the last 24 hours, newest first (the status page lists them)."""
    watched_wallets: tuple[str, ...] = ()
    """The configured wallets, in config order (the status page lists them). When empty the
    page lists the wallets it knows of from the labels and the snapshot."""
    watched_spenders: tuple[tuple[int, str], ...] = ()
    """The configured (chain_id, spender) pairs, in config order; when empty the page lists
    those it knows of from the labels and the last successes."""

    discovered: frozenset[AllowanceKey] = frozenset()
    """Approvals some ``Approval`` log named (read live by the chain reader)."""
    oneinch_spenders: frozenset[tuple[int, str]] = frozenset()
    """(chain_id, spender) that 1inch's Balance API is asked about (empty in key-free
    mode)."""
    approved_at: Mapping[AllowanceKey, datetime] = field(default_factory=dict)
    """When each discovered approval was last approved: its newest log's block time."""

    def source_of(self, key: AllowanceKey) -> str:
        """Where an approval is read: ``1inch``, ``chain`` or ``1inch+chain`` (both)."""
        oneinch = (key[0], key[3]) in self.oneinch_spenders
        chain = key in self.discovered
        if oneinch and chain:
            return "1inch+chain"
        return "chain" if chain else "1inch"

    def newest_success(self) -> datetime | None:
        return max(self.last_success.values(), default=None)
