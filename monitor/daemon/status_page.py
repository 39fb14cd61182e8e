"""The status page ``/``: what a person checking on their wallets needs at a glance.

``status_context`` is a pure function from a ``MonitorView`` and ``now`` to frozen rows; the
Jinja2 template ``templates/status.html`` lays them out, with autoescaping on, so nothing
from upstream (token symbols and names) or from the config (labels) can become markup.
Upstream text is also made inert before it reaches the template: control characters and
bidirectional overrides are replaced, and it is cut to a sane length, so a token cannot
reorder or hide the text around it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Generic, TypeVar

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from monitor import __version__
from monitor.daemon.view import MonitorView
from monitor.domain.addresses import NATIVE_TOKEN, to_checksum
from monitor.domain.chains import chain_name, explorer_address_url
from monitor.domain.model import Token, format_units
from monitor.domain.records import StoredEvent
from monitor.domain.snapshot import AllowanceKey
from monitor.render import safe_text, short_address
from monitor.risk.exposure import is_native
from monitor.risk.model import Finding, SpenderExposure
from monitor.timespec import iso

if TYPE_CHECKING:
    from monitor.chain.source import ChainStatus

MIN_REFRESH_S = 10
"""The page reloads every ``poll.interval_s``, but never more often than this."""
MAX_ROWS = 500
"""Rows shown per table; the rest are counted, and the CLI lists them all."""
CHANGES_WINDOW = timedelta(hours=24)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Chain:
    id: int
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A wallet, spender or token contract: ``label (0x1234…abcd)``, the full address on
    hover, a link to the chain's block explorer when it has a known one."""

    address: str
    """EIP-55."""
    short: str
    label: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRef:
    symbol: str
    name: str
    contract: Address | None
    """None for the chain's native coin, which has no contract."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RevokeCall:
    """What revokes one approval: ``approve(spender, 0)`` sent to the token contract."""

    token: TokenRef
    spender: Address
    call: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingRow:
    severity: str
    rule: str
    chain: Chain
    wallet: Address
    spender: Address
    token: TokenRef | None
    detail: str
    suppression_reason: str | None
    revoke: tuple[RevokeCall, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletRow:
    """A watched wallet, with a link to its page on each chain's explorer."""

    wallet: Address
    explorers: tuple[tuple[Chain, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposureRow:
    chain: Chain
    wallet: Address
    spender: Address
    at_risk_usd: str
    unpriced: tuple[TokenRef, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRow:
    observed_at: str
    age: str
    chain: Chain
    wallet: Address
    token: TokenRef
    spender: Address | None
    """None for a balance change."""
    change: str
    old: str
    new: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRow:
    """A non-zero approval of the snapshot, where it is read, and when it was approved."""

    chain: Chain
    wallet: Address
    token: TokenRef
    spender: Address
    allowance: str
    source: str
    """``1inch``, ``chain`` (discovered in the chain's logs) or ``1inch+chain``."""
    approved_at: str | None
    """The block time of its newest ``Approval`` log (discovered approvals only)."""
    approved_age: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryRow:
    """What discovery knows of one chain (``ChainStatus``), worded."""

    chain: Chain
    endpoint: str
    """``scheme://host[:port]`` only."""
    state: str
    """"scanning", "caught up", "not scanned yet" or "failing"."""
    head_block: str
    scanned_to: str
    lag_blocks: str
    scan: str | None
    """While a scan runs: ``done of total blocks (pct)``."""
    eta: str | None
    pairs: int
    unreadable: int
    nft_approvals: int
    multicall: str
    error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainRow:
    chain: Chain
    last_success: str | None
    age: str | None
    upstream: str
    """"up", "down" or "unknown"."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rows(Generic[T]):
    """At most ``MAX_ROWS`` rows of a table and how many more there are."""

    shown: tuple[T, ...]
    total: int

    @property
    def hidden(self) -> int:
        return self.total - len(self.shown)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusPage:
    """Everything the template shows, already worded."""

    version: str
    now: str
    refresh_s: int
    last_poll: str | None
    last_poll_age: str | None
    last_poll_outcome: str | None
    last_success: str | None
    last_success_age: str | None
    total_at_risk_usd: str
    total_is_lower_bound: bool
    open_findings: Rows[FindingRow]
    open_by_severity: tuple[tuple[str, int], ...]
    suppressed_findings: Rows[FindingRow]
    exposures: Rows[ExposureRow]
    approvals: Rows[ApprovalRow]
    changes: Rows[ChangeRow]
    chains: tuple[ChainRow, ...]
    discovery: tuple[DiscoveryRow, ...]
    wallets: tuple[WalletRow, ...]
    spenders: tuple[tuple[Chain, tuple[Address, ...]], ...]


def render_status(view: MonitorView, now: datetime, discovery: Sequence[ChainStatus] = ()) -> str:
    """The status page as HTML; ``discovery``: the chain reader's live status per chain."""
    return _template().render(page=status_context(view, now, discovery))


@cache
def _template() -> Template:
    # Built once per process: loading and compiling the template is the slow part.
    environment = Environment(
        loader=PackageLoader("monitor.daemon", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return environment.get_template("status.html")


def status_context(
    view: MonitorView, now: datetime, discovery: Sequence[ChainStatus] = ()
) -> StatusPage:
    """What the status page shows of ``view`` at ``now``, and of ``discovery`` (the chain
    reader's per-chain status). Pure: no I/O, no clock."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    names = _Names(view)
    approved = _approved_tokens(view)
    open_findings = [f for f in view.findings if not f.suppressed]
    suppressed = [f for f in view.findings if f.suppressed]
    # An exposure whose approvals are all gone (revoked) is nothing at risk: no $0.00 row.
    exposures = sorted(
        (e for e in view.exposures if (e.chain_id, e.wallet, e.spender) in approved),
        key=lambda e: (-e.at_risk_usd, e.chain_id, e.wallet, e.spender),
    )
    newest = view.newest_success()
    spenders = _watched_spenders(view)
    severities: dict[str, int] = {}
    for f in open_findings:
        severities[f.severity] = severities.get(f.severity, 0) + 1
    return StatusPage(
        version=__version__,
        now=iso(now),
        refresh_s=max(MIN_REFRESH_S, math.ceil(view.poll_interval_s)),
        last_poll=iso(view.last_poll_at) if view.last_poll_at else None,
        last_poll_age=_age(now, view.last_poll_at) if view.last_poll_at else None,
        last_poll_outcome=view.last_poll_outcome,
        last_success=iso(newest) if newest else None,
        last_success_age=_age(now, newest) if newest else None,
        total_at_risk_usd=_usd(sum((e.at_risk_usd for e in exposures), Decimal(0))),
        total_is_lower_bound=any(e.missing_prices for e in exposures),
        open_findings=_rows(names.finding(f, approved) for f in open_findings),
        open_by_severity=tuple(sorted(severities.items(), key=lambda kv: _SEVERITY_ORDER[kv[0]])),
        suppressed_findings=_rows(names.finding(f, approved) for f in suppressed),
        exposures=_rows(names.exposure(e) for e in exposures),
        approvals=_rows(names.approval(key, amount, now) for key, amount in _approvals(view)),
        changes=_rows(names.change(c, now) for c in _recent(view.recent_changes, now)),
        chains=_chain_rows(view, now),
        discovery=tuple(
            _discovery_row(status) for status in sorted(discovery, key=lambda s: s.chain_id)
        ),
        wallets=tuple(names.watched_wallet(w, list(spenders)) for w in _watched_wallets(view)),
        spenders=tuple(
            (_chain(chain_id), tuple(names.spender(chain_id, s) for s in chain_spenders))
            for chain_id, chain_spenders in spenders.items()
        ),
    )


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


class _Names:
    """Turns the view's addresses and amounts into what a person reads."""

    def __init__(self, view: MonitorView) -> None:
        self._view = view

    def wallet(self, wallet: str, chain_id: int) -> Address:
        return _address(chain_id, wallet, self._view.wallet_labels.get(wallet))

    def watched_wallet(self, wallet: str, chain_ids: Iterable[int]) -> WalletRow:
        # A wallet is the same address on every chain: one link per watched chain.
        address = _address(None, wallet, self._view.wallet_labels.get(wallet))
        links = ((_chain(c), explorer_address_url(c, address.address)) for c in chain_ids)
        return WalletRow(
            wallet=address, explorers=tuple((c, url) for c, url in links if url is not None)
        )

    def spender(self, chain_id: int, spender: str) -> Address:
        return _address(chain_id, spender, self._view.spender_labels.get((chain_id, spender)))

    def token(self, chain_id: int, token: str) -> TokenRef:
        meta = self._view.tokens.get((chain_id, token))
        native = is_native(chain_id, token, self._view.tokens)
        contract = None if native else _address(chain_id, token, None)
        if meta is not None and meta.symbol:
            symbol = inert(meta.symbol, 40)
        else:
            symbol = "native coin" if native else short_address(token)
        name = inert(meta.name, 80) if meta is not None else ""
        return TokenRef(symbol=symbol, name=name, contract=contract)

    def amount(self, chain_id: int, token: str, amount: int, *, allowance: bool) -> str:
        if allowance and amount >= self._view.unlimited_threshold:
            return "unlimited"
        meta: Token | None = self._view.tokens.get((chain_id, token))
        return format_units(amount, meta.decimals if meta else None)

    def finding(self, f: Finding, approved: Mapping[_Group, Sequence[str]]) -> FindingRow:
        # A per-token finding names its approval; value_at_risk covers every token the
        # spender may take from the wallet, so revoking means one call per token.
        group = (f.chain_id, f.wallet, f.spender)
        tokens = [f.token] if f.token is not None else approved.get(group, ())
        spender = self.spender(f.chain_id, f.spender)
        return FindingRow(
            severity=str(f.severity),
            rule=str(f.rule),
            chain=_chain(f.chain_id),
            wallet=self.wallet(f.wallet, f.chain_id),
            spender=spender,
            token=self.token(f.chain_id, f.token) if f.token is not None else None,
            detail=inert(f.detail, 400),
            suppression_reason=(
                inert(f.suppression_reason or "no reason given", 400) if f.suppressed else None
            ),
            revoke=tuple(
                RevokeCall(
                    token=self.token(f.chain_id, token),
                    spender=spender,
                    call=f"approve({spender.address}, 0)",
                )
                for token in tokens
                if token != NATIVE_TOKEN
            ),
        )

    def exposure(self, e: SpenderExposure) -> ExposureRow:
        return ExposureRow(
            chain=_chain(e.chain_id),
            wallet=self.wallet(e.wallet, e.chain_id),
            spender=self.spender(e.chain_id, e.spender),
            at_risk_usd=_usd(e.at_risk_usd),
            unpriced=tuple(self.token(e.chain_id, t) for t in e.missing_prices),
        )

    def approval(self, key: AllowanceKey, amount: int, now: datetime) -> ApprovalRow:
        chain_id, wallet, token, spender = key
        approved = self._view.approved_at.get(key)
        return ApprovalRow(
            chain=_chain(chain_id),
            wallet=self.wallet(wallet, chain_id),
            token=self.token(chain_id, token),
            spender=self.spender(chain_id, spender),
            allowance=self.amount(chain_id, token, amount, allowance=True),
            source=self._view.source_of(key),
            approved_at=iso(approved) if approved else None,
            approved_age=_age(now, approved) if approved else None,
        )

    def change(self, stored: StoredEvent, now: datetime) -> ChangeRow:
        event = stored.event
        allowance = event.spender is not None
        return ChangeRow(
            observed_at=iso(stored.observed_at),
            age=_age(now, stored.observed_at),
            chain=_chain(event.chain_id),
            wallet=self.wallet(event.wallet, event.chain_id),
            token=self.token(event.chain_id, event.token),
            spender=self.spender(event.chain_id, event.spender) if event.spender else None,
            change=str(event.change).replace("_", " "),
            old=self.amount(event.chain_id, event.token, event.old, allowance=allowance),
            new=self.amount(event.chain_id, event.token, event.new, allowance=allowance),
        )


_Group = tuple[int, str, str]


def _approved_tokens(view: MonitorView) -> dict[_Group, list[str]]:
    """Per (chain, wallet, spender): the tokens it still holds a non-zero approval of."""
    approved: dict[_Group, list[str]] = {}
    for (chain_id, wallet, token, spender), allowance in view.snapshot.allowances.items():
        if allowance > 0 and not is_native(chain_id, token, view.tokens):
            approved.setdefault((chain_id, wallet, spender), []).append(token)
    for tokens in approved.values():
        tokens.sort()
    return approved


def _approvals(view: MonitorView) -> list[tuple[AllowanceKey, int]]:
    """The non-zero approvals of tokens (never the native coin), in key order."""
    return sorted(
        (key, amount)
        for key, amount in view.snapshot.allowances.items()
        if amount > 0 and not is_native(key[0], key[2], view.tokens)
    )


_URL_TAIL = re.compile(
    r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^@/\s?#)\]\"']*@)?([^/\s?#)\]\"']+)"
    r"[^\s)\]\"']*?(?=[:;,.]?(?:[\s)\]\"']|$))"
)
"""A URL, to be cut to ``scheme://host[:port]`` (user info, path, query and fragment gone)."""


def _discovery_row(status: ChainStatus) -> DiscoveryRow:
    head, scanned = status.head_block, status.scanned_to
    if status.last_error is not None:
        state = "failing"
    elif status.scanning:
        state = "scanning"
    elif scanned is None:
        state = "not scanned yet"
    else:
        state = "caught up"
    scan = eta = None
    if status.scanning:
        done, total = status.scan_done_blocks, status.scan_total_blocks
        share = f" ({100 * done / total:.0f}%)" if total else ""
        scan = f"{done:,} of {total:,} blocks{share}"
        eta = _duration(status.scan_eta_s) if status.scan_eta_s is not None else "estimating"
    return DiscoveryRow(
        chain=_chain(status.chain_id),
        # scheme://host[:port] already; cut again, so that no path or query can ever show.
        endpoint=inert(_URL_TAIL.sub(r"\1\2", status.endpoint), 120),
        state=state,
        head_block=f"{head:,}" if head is not None else "-",
        scanned_to=f"{scanned:,}" if scanned is not None else "-",
        lag_blocks=f"{max(0, head - scanned):,}"
        if head is not None and scanned is not None
        else "-",
        scan=scan,
        eta=eta,
        pairs=status.pairs,
        unreadable=status.unreadable,
        nft_approvals=status.nft_approvals,
        multicall="unknown" if status.multicall is None else ("yes" if status.multicall else "no"),
        # Errors name endpoints as scheme://host already; any URL is cut to that anyway.
        error=inert(_URL_TAIL.sub(r"\1\2", status.last_error), 400) if status.last_error else None,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _recent(events: Iterable[StoredEvent], now: datetime) -> list[StoredEvent]:
    since = now - CHANGES_WINDOW
    return sorted(
        (e for e in events if e.observed_at >= since), key=lambda e: e.observed_at, reverse=True
    )


def _chain_rows(view: MonitorView, now: datetime) -> tuple[ChainRow, ...]:
    newest: dict[int, datetime] = {}
    for (chain_id, _), at in view.last_success.items():
        if chain_id not in newest or at > newest[chain_id]:
            newest[chain_id] = at
    chain_ids = sorted(set(newest) | set(view.upstream_up) | {c for c, _ in view.watched_spenders})
    rows = []
    for chain_id in chain_ids:
        when = newest.get(chain_id)
        up = view.upstream_up.get(chain_id)
        rows.append(
            ChainRow(
                chain=_chain(chain_id),
                last_success=iso(when) if when else None,
                age=_age(now, when) if when else None,
                upstream="unknown" if up is None else ("up" if up else "down"),
            )
        )
    return tuple(rows)


def _watched_wallets(view: MonitorView) -> list[str]:
    if view.watched_wallets:
        return list(view.watched_wallets)
    known = set(view.wallet_labels) | {w for _, w, _, _ in view.snapshot.allowances}
    known |= {w for _, w, _ in view.snapshot.balances}
    return sorted(known)


def _watched_spenders(view: MonitorView) -> dict[int, list[str]]:
    pairs: Iterable[tuple[int, str]] = view.watched_spenders or sorted(
        set(view.spender_labels) | set(view.last_success)
    )
    by_chain: dict[int, list[str]] = {}
    for chain_id, spender in pairs:
        if spender:  # "" is a chain's discovery as a whole, shown in the discovery table
            by_chain.setdefault(chain_id, []).append(spender)
    return dict(sorted(by_chain.items()))


def _rows(rows: Iterable[T]) -> Rows[T]:
    shown: list[T] = []
    total = 0
    for row in rows:
        total += 1
        if total <= MAX_ROWS:
            shown.append(row)
    return Rows(shown=tuple(shown), total=total)


@lru_cache(maxsize=64)
def _chain(chain_id: int) -> Chain:
    return Chain(id=chain_id, name=chain_name(chain_id))


def _address(chain_id: int | None, address: str, label: str | None) -> Address:
    checksum = to_checksum(address)
    return Address(
        address=checksum,
        short=short_address(checksum),
        label=inert(label, 64) if label else None,
        url=explorer_address_url(chain_id, checksum) if chain_id is not None else None,
    )


def inert(text: str, limit: int) -> str:
    """``text`` safe to show as it is (``safe_text``), each unsafe character shown as U+FFFD."""
    return safe_text(text, limit, replacement="\ufffd")


def _usd(value: Decimal) -> str:
    return f"${value:,.2f}"


def _age(now: datetime, then: datetime) -> str:
    seconds = (now - then).total_seconds()
    if seconds < 0:
        return "in the future"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"
