"""Prometheus metrics: event counters, and mirrored state rendered for each view.

State (allowances, balances, findings, freshness) is never set on gauges: it is rendered
from a ``MonitorView``, so a revoked approval's series is gone at the next scrape.
The exposition text of the state is rendered once per view, off the event loop
(``render_state``), and kept only gzip-compressed, one gzip member per group of families
(``StateText``): a scrape writes those bytes as they are, since concatenated gzip members
are one gzip stream (RFC 1952, 2.2). With tens of thousands of series, formatting them at
every scrape would hold the loop for seconds, and even copying the text adds up.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from monitor.daemon.view import MonitorView
from monitor.domain.snapshot import AllowanceKey, BalanceKey
from monitor.risk.model import Finding

if TYPE_CHECKING:  # not imported by the listener: the chain reader pulls in the store
    from monitor.chain.source import ChainStatus
    from monitor.oneinch.client import RequestRecord

PREFIX = "exposure_monitor"
MAX_LABEL_TEXT = 64
POSITION_LABELS = (
    "chain_id",
    "wallet",
    "token",
    "spender",
    "symbol",
    "wallet_label",
    "spender_label",
    "source",
)
"""``source``: where the approval is read, ``1inch``, ``chain`` (discovered in the chain's
``Approval`` logs, read live) or ``1inch+chain`` (both)."""
BALANCE_LABELS = ("chain_id", "wallet", "token", "symbol", "wallet_label")
FINDING_LABELS = ("rule", "severity", "chain_id", "wallet", "spender", "token")
FINDING_COUNT_LABELS = ("rule", "severity", "chain_id")
GZIP_LEVEL = 1
"""zlib level of the state text. Measured on 16.5 MB of a large portfolio's state: level 1
gives 0.91 MB in 25 ms, level 6 0.67 MB in 55 ms (inflating either takes 20 ms). Compressed
at every change of the view, counted in each poll's CPU; a quarter fewer bytes per scrape
is not worth twice the CPU."""
GZIP_WBITS = 31
"""zlib's window bits for a gzip header and trailer (16 + the largest window, 15)."""
LINES_PER_CHUNK = 4096
"""Exposition lines formatted and compressed at a time, so no whole family is ever held as
one string."""

SORT_SLICE = 8192
"""Keys sorted per call when ordering positions (see ``_in_order``)."""

Sample = tuple[tuple[str, ...], float]
_Key = TypeVar("_Key", AllowanceKey, BalanceKey)
Family = tuple[str, str, tuple[str, ...], Iterable[Sample]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionSeries:
    """The positions of one view that get a series, capped, as keys into its snapshot.

    Samples are made as they are written (``position_families``) and dropped right after:
    kept, tens of thousands of label tuples would fill the garbage collector's generations,
    and a full collection stops every thread, the event loop included, for as long as it
    takes to scan the whole heap (half a second with a large portfolio).
    """

    view: MonitorView
    unlimited: tuple[AllowanceKey, ...] = ()
    finite: tuple[AllowanceKey, ...] = ()
    balances: tuple[BalanceKey, ...] = ()
    dropped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingSeries:
    """The open findings of one view that get a series, capped, and the open findings
    counted per (rule, severity, chain_id) before the cap."""

    findings: tuple[Finding, ...] = ()
    counts: tuple[Sample, ...] = ()
    dropped: int = 0


class Instruments:
    """The counters and histograms of the daemon, in an app-owned registry."""

    def __init__(self, registry: CollectorRegistry, *, version: str) -> None:
        self.polls = Counter(f"{PREFIX}_polls", "Polls run.", registry=registry)
        self.polls_failed = Counter(
            f"{PREFIX}_polls_failed",
            "Polls with at least one failed batch, or that failed as a whole, by first reason.",
            ["reason"],
            registry=registry,
        )
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "Wall time of a poll, API requests and recording included.",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=registry,
        )
        self.api_requests = Counter(
            f"{PREFIX}_api_requests",
            "HTTP attempts to the 1inch API, by endpoint and status code (or timeout/error).",
            ["endpoint", "code"],
            registry=registry,
        )
        self.api_request_duration = Histogram(
            f"{PREFIX}_api_request_duration_seconds",
            "Latency of HTTP attempts to the 1inch API.",
            ["endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.rpc_requests = Counter(
            f"{PREFIX}_rpc_requests",
            "HTTP attempts to the chains' JSON-RPC endpoints, by chain, method (batch for a"
            " batch of several methods) and status code (or timeout/error).",
            ["chain_id", "method", "code"],
            registry=registry,
        )
        self.changes = Counter(
            f"{PREFIX}_changes",
            "Recorded change events, by kind (granted, revoked, ..., balance_changed); a new"
            " install's first observations are not changes.",
            ["change"],
            registry=registry,
        )
        self.allowance_changes_deprecated = Counter(
            f"{PREFIX}_allowance_changes",
            # Its name says allowance but it counts balance changes too: the same counts as
            # exposure_monitor_changes_total, kept one release for users' rules and panels.
            "Deprecated: the same as exposure_monitor_changes_total (balance changes included);"
            " will be removed.",
            ["change"],
            registry=registry,
        )
        self.scheduler_events = Counter(
            f"{PREFIX}_scheduler_events",
            "Scheduler events: missed, errored or skipped (already running) polls.",
            ["event"],
            registry=registry,
        )
        self.position_series_dropped = Counter(
            f"{PREFIX}_position_series_dropped",
            "Position series left out of /metrics by metrics.max_position_series, per view built.",
            registry=registry,
        )
        self.finding_series_dropped = Counter(
            f"{PREFIX}_finding_series_dropped",
            "Finding series left out of /metrics by metrics.max_finding_series, per view built.",
            registry=registry,
        )
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "Version of exposure-monitor.", ["version"], registry=registry
        )
        self.build_info.labels(version=version).set(1)
        for change in (
            "granted",
            "increased",
            "decreased",
            "revoked",
            "became_unlimited",
            "no_longer_unlimited",
            "balance_changed",
        ):
            self.changes.labels(change=change)
            self.allowance_changes_deprecated.labels(change=change)

    def count_change(self, change: str) -> None:
        """One recorded change event of kind ``change``."""
        self.changes.labels(change=change).inc()
        self.allowance_changes_deprecated.labels(change=change).inc()

    def count_rpc_request(self, chain_id: int, record: RequestRecord) -> None:
        """An HTTP attempt of the chain reader (``ChainRpc``'s ``on_request``, with its chain)."""
        self.rpc_requests.labels(
            chain_id=str(chain_id), method=clip(record.endpoint), code=record.code
        ).inc()


DISCOVERY = f"{PREFIX}_discovery"


class DiscoveryCollector:
    """``exposure_monitor_discovery_*``: the chain reader's per-chain status, read at each
    scrape from ``status`` (``Monitor.discovery_status``), so a long first scan's progress
    shows while it runs. One series per chain with discovery; none without discovery.

    The endpoint is shown as ``scheme://host[:port]`` only (``ChainStatus.endpoint``), in
    ``exposure_monitor_discovery_endpoint_info``.
    """

    def __init__(self, status: Callable[[], Iterable[ChainStatus]]) -> None:
        self._status = status

    def describe(self) -> Iterator[Metric]:
        """The families, without samples: what a registry checks names with (so it need not
        call ``status`` when the collector is registered)."""
        yield from self._families(())

    def collect(self) -> Iterator[Metric]:
        chains = sorted(self._status(), key=lambda s: s.chain_id)
        if chains:  # no discovery, or the state not loaded yet: not even HELP lines
            yield from self._families(chains)

    @staticmethod
    def _families(chains: Iterable[ChainStatus]) -> tuple[Metric, ...]:
        def gauge(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{DISCOVERY}_{name}", documentation, labels=["chain_id"])

        info = InfoMetricFamily(
            f"{DISCOVERY}_endpoint",
            "The JSON-RPC endpoint each chain is read from, as scheme://host[:port] only.",
            labels=["chain_id"],
        )
        head = gauge("head_block", "Newest block number the chain's endpoint answered.")
        scanned = gauge(
            "scanned_block",
            "Highest block the Approval log scan has covered for every watched wallet"
            " (head minus discovery.confirmations once caught up).",
        )
        lag = gauge(
            "scan_lag_blocks",
            "Blocks between the head and the scanned block (discovery.confirmations when"
            " caught up).",
        )
        scanning = gauge("scanning", "1 while a scan of Approval logs runs, else 0.")
        done = gauge("scan_done_blocks", "Blocks the running or last scan has covered.")
        total = gauge("scan_total_blocks", "Blocks the running or last scan has to cover.")
        eta = gauge("scan_eta_seconds", "Estimated time left of the running scan.")
        pairs = gauge("pairs", "(wallet, token, spender) pairs found in Approval logs.")
        unreadable = gauge(
            "unreadable_pairs",
            "Pairs whose allowance or balance could not be read (no ERC-20 answer: a revert"
            " or garbage), never taken for an allowance.",
        )
        nft = gauge("nft_approvals", "ERC-721 Approval logs seen (counted, not read as ERC-20).")
        multicall = gauge("multicall", "1 when live reads go through Multicall3, 0 when not.")
        up = gauge("endpoint_up", "1 when the chain's last discovery read succeeded, else 0.")
        for s in chains:
            chain_id = str(s.chain_id)
            info.add_metric([chain_id], {"endpoint": s.endpoint})
            if s.head_block is not None:
                head.add_metric([chain_id], s.head_block)
            if s.scanned_to is not None:
                scanned.add_metric([chain_id], s.scanned_to)
                if s.head_block is not None:
                    lag.add_metric([chain_id], max(0, s.head_block - s.scanned_to))
            scanning.add_metric([chain_id], 1.0 if s.scanning else 0.0)
            done.add_metric([chain_id], s.scan_done_blocks)
            total.add_metric([chain_id], s.scan_total_blocks)
            if s.scanning and s.scan_eta_s is not None:
                eta.add_metric([chain_id], s.scan_eta_s)
            pairs.add_metric([chain_id], s.pairs)
            unreadable.add_metric([chain_id], s.unreadable)
            nft.add_metric([chain_id], s.nft_approvals)
            if s.multicall is not None:
                multicall.add_metric([chain_id], 1.0 if s.multicall else 0.0)
            up.add_metric([chain_id], 1.0 if s.last_error is None else 0.0)
        progress = (head, scanned, lag, scanning, done, total, eta)
        return (info, *progress, pairs, unreadable, nft, multicall, up)


def clip(text: str) -> str:
    """Upstream text in a label: bounded length (escaping is the exposition's job)."""
    return text if len(text) <= MAX_LABEL_TEXT else text[: MAX_LABEL_TEXT - 1] + "…"


def whole_tokens(amount: int, decimals: int) -> float:
    return float(Decimal(amount).scaleb(-decimals))


def position_series(view: MonitorView, max_series: int) -> PositionSeries:
    """The positions of ``view`` that get a series, at most ``max_series`` series in all.

    When capped, unlimited approvals go first, then other allowances, then balances, so the
    series that alerts depend on are the last to be dropped.
    """
    tokens = view.tokens
    # Keys only (objects that exist already): no new object per position (see PositionSeries).
    unlimited: list[AllowanceKey] = []
    finite: list[AllowanceKey] = []
    for key, amount in view.snapshot.allowances.items():
        token = tokens.get((key[0], key[2]))
        if token is not None and token.is_native:
            continue
        if amount >= view.unlimited_threshold:
            unlimited.append(key)
        elif token is not None and token.decimals is not None:
            finite.append(key)
    with_decimals: list[BalanceKey] = []
    for balance_key in view.snapshot.balances:
        token = tokens.get((balance_key[0], balance_key[2]))
        if token is not None and token.decimals is not None:
            with_decimals.append(balance_key)

    # An unlimited approval costs two series (allowance +Inf and allowance_unlimited 1).
    kept_unlimited = tuple(islice(_in_order(unlimited), max_series // 2))
    budget = max_series - 2 * len(kept_unlimited)
    kept_finite = tuple(islice(_in_order(finite), budget))
    kept_balances = tuple(islice(_in_order(with_decimals), budget - len(kept_finite)))
    total = 2 * len(unlimited) + len(finite) + len(with_decimals)
    kept = 2 * len(kept_unlimited) + len(kept_finite) + len(kept_balances)
    return PositionSeries(
        view=view,
        unlimited=kept_unlimited,
        finite=kept_finite,
        balances=kept_balances,
        dropped=total - kept,
    )


def _in_order(keys: list[_Key]) -> Iterator[_Key]:
    """``keys`` in the order ``sorted`` would give them.

    A sort is one call that holds the GIL throughout, and so holds the event loop, which
    serves scrapes meanwhile: 300,000 keys take about half a second. Sorted in slices and
    merged lazily instead, no call takes long, and only as many as are taken get merged.
    """
    runs = [sorted(keys[start : start + SORT_SLICE]) for start in range(0, len(keys), SORT_SLICE)]
    return heapq.merge(*runs)


def position_families(series: PositionSeries) -> Iterator[Family]:
    """Allowances and balances: (name, help, label names, samples made as they are read)."""
    view = series.view
    tokens, allowances = view.tokens, view.snapshot.allowances
    wallet_labels, spender_labels = view.wallet_labels, view.spender_labels

    def labels(key: AllowanceKey) -> tuple[str, ...]:
        chain_id, wallet, address, spender = key
        token = tokens.get((chain_id, address))
        return (
            str(chain_id),
            wallet,
            address,
            spender,
            clip(token.symbol) if token else "",
            wallet_labels.get(wallet, ""),
            spender_labels.get((chain_id, spender), ""),
            view.source_of(key),
        )

    def whole(key: AllowanceKey | BalanceKey, amount: int) -> float:
        # Listed in the series only when the token's decimals are known.
        return whole_tokens(amount, tokens[(key[0], key[2])].decimals or 0)

    def allowance() -> Iterator[Sample]:
        for key in series.unlimited:
            yield labels(key), math.inf
        for key in series.finite:
            yield labels(key), whole(key, allowances[key])

    def balance() -> Iterator[Sample]:
        for key in series.balances:
            chain_id, wallet, address = key
            symbol = clip(tokens[(chain_id, address)].symbol)
            names = (str(chain_id), wallet, address, symbol, wallet_labels.get(wallet, ""))
            yield names, whole(key, view.snapshot.balances[key])

    yield (
        "allowance",
        "Allowance in whole tokens (+Inf when unlimited).",
        POSITION_LABELS,
        allowance(),
    )
    yield (
        "allowance_unlimited",
        "1 for each unlimited approval.",
        POSITION_LABELS,
        ((labels(key), 1.0) for key in series.unlimited),
    )
    yield ("balance", "Balance in whole tokens.", BALANCE_LABELS, balance())


def finding_series(view: MonitorView, max_series: int) -> FindingSeries:
    """The open, unsuppressed findings that get a series, at most ``max_series`` of them, and
    the open findings per (rule, severity, chain_id), all of them.

    When capped, critical findings go first, then warnings, then info; within a severity
    the view's order is kept.
    """
    by_rank: dict[int, list[Finding]] = {}
    counts: Tally[tuple[str, str, int]] = Tally()
    for f in view.findings:
        if not f.suppressed:
            counts[(f.rule, f.severity, f.chain_id)] += 1
            by_rank.setdefault(f.severity.rank, []).append(f)
    ordered = [f for rank in sorted(by_rank, reverse=True) for f in by_rank[rank]]
    kept = ordered[:max_series]
    return FindingSeries(
        findings=tuple(kept),
        counts=tuple(
            ((rule, severity, str(chain_id)), float(n))
            for (rule, severity, chain_id), n in sorted(counts.items())
        ),
        dropped=len(ordered) - len(kept),
    )


def finding_families(series: FindingSeries) -> Iterator[Family]:
    """Findings, one series each (capped), and their counts (never capped)."""
    yield (
        "finding",
        "1 per open, unsuppressed finding.",
        FINDING_LABELS,
        (
            ((f.rule, f.severity, str(f.chain_id), f.wallet, f.spender, f.token or ""), 1.0)
            for f in series.findings
        ),
    )
    yield (
        "open_findings",
        "Open, unsuppressed findings by rule, severity and chain, metrics.max_finding_series"
        " notwithstanding.",
        FINDING_COUNT_LABELS,
        series.counts,
    )


def exposure_families(view: MonitorView) -> Iterator[Family]:
    """Value at risk and unpriced tokens: one series per exposure (thousands), reused while
    the exposures and labels are unchanged."""
    yield (
        "at_risk_usd",
        "Value a spender could move from a wallet now: sum of min(balance, allowance) x USD price.",
        ("chain_id", "wallet", "spender", "spender_label", "wallet_label"),
        tuple(
            (
                (
                    str(e.chain_id),
                    e.wallet,
                    e.spender,
                    view.spender_labels.get((e.chain_id, e.spender), ""),
                    view.wallet_labels.get(e.wallet, ""),
                ),
                float(e.at_risk_usd),
            )
            for e in view.exposures
        ),
    )
    yield (
        "unpriced_tokens",
        "Tokens with an allowance whose USD price is unknown, per wallet and spender.",
        ("chain_id", "wallet", "spender"),
        tuple(
            ((str(e.chain_id), e.wallet, e.spender), float(len(e.missing_prices)))
            for e in view.exposures
            if e.missing_prices
        ),
    )


def freshness_families(view: MonitorView) -> Iterator[Family]:
    """Freshness and the poll interval: small, and rendered anew for every view."""
    yield (
        "last_successful_poll_timestamp_seconds",
        "When every batch of a (chain, spender) was last observed, Unix time.",
        ("chain_id", "spender"),
        tuple(
            ((str(chain_id), spender), at.timestamp())
            for (chain_id, spender), at in sorted(view.last_success.items())
        ),
    )
    yield (
        "upstream_up",
        "1 when every batch of the chain succeeded in the last poll.",
        ("chain_id",),
        tuple(((str(c),), 1.0 if up else 0.0) for c, up in sorted(view.upstream_up.items())),
    )
    yield (
        "poll_interval_seconds",
        "The configured poll.interval_s: the stale-data alert allows three of them.",
        (),
        (((), float(view.poll_interval_s)),),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GzipMember:
    """Exposition text compressed as one gzip member (RFC 1952)."""

    data: bytes
    text_size: int
    """Length of the text it holds, in bytes."""


@dataclass(frozen=True, slots=True)
class StateText:
    """The state metrics of one view in the text format (0.0.4), held only gzip-compressed.

    The members, written one after the other, are one valid gzip stream: ``gzip_chunks`` is
    what a client that accepts gzip is sent as it is. ``text_chunks`` inflates them piece by
    piece for the others; ``bytes(state)`` is the whole text at once (tests, tools: not for
    the scrape path).
    """

    members: tuple[GzipMember, ...]

    @property
    def gzip_size(self) -> int:
        return sum(len(member.data) for member in self.members)

    @property
    def text_size(self) -> int:
        return sum(member.text_size for member in self.members)

    def gzip_chunks(self) -> Iterator[bytes]:
        for member in self.members:
            yield member.data

    def text_chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The text, in pieces of at most ``chunk_size`` bytes."""
        for member in self.members:
            inflater = zlib.decompressobj(GZIP_WBITS)
            chunk = inflater.decompress(member.data, chunk_size)
            while chunk:
                yield chunk
                chunk = inflater.decompress(inflater.unconsumed_tail, chunk_size)

    def __bytes__(self) -> bytes:
        return b"".join(self.text_chunks())


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedPart:
    """Some families of the state, compressed, and how many series the cap left out."""

    text: GzipMember
    max_series: int
    dropped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedState:
    """The state metrics of one view, and the view they show."""

    view: MonitorView
    positions: RenderedPart
    findings: RenderedPart
    exposures: GzipMember
    text: StateText


def render_state(
    view: MonitorView,
    *,
    max_position_series: int,
    max_finding_series: int,
    previous: RenderedState | None = None,
) -> RenderedState:
    """Render ``view``'s state metrics in the Prometheus text format (0.0.4), compressed.

    The position and finding families (nearly all of the bytes) are reused from ``previous``
    when what they show is unchanged, as it is after most polls. CPU-bound: meant for a
    worker thread (zlib lets go of the GIL while it compresses).
    """
    if (
        previous is not None
        and previous.positions.max_series == max_position_series
        and _same_positions(previous.view, view)
    ):
        positions = previous.positions
    else:
        series = position_series(view, max_position_series)
        positions = RenderedPart(
            text=_compress(position_families(series)),
            dropped=series.dropped,
            max_series=max_position_series,
        )
    if (
        previous is not None
        and previous.findings.max_series == max_finding_series
        and previous.view.findings == view.findings
    ):
        findings = previous.findings
    else:
        found = finding_series(view, max_finding_series)
        findings = RenderedPart(
            text=_compress(finding_families(found)),
            dropped=found.dropped,
            max_series=max_finding_series,
        )
    if previous is not None and _same_exposures(previous.view, view):
        exposures = previous.exposures
    else:
        exposures = _compress(exposure_families(view))
    freshness = _compress(freshness_families(view))
    return RenderedState(
        view=view,
        positions=positions,
        findings=findings,
        exposures=exposures,
        text=StateText((positions.text, findings.text, exposures, freshness)),
    )


def gzip_compress(data: bytes) -> bytes:
    """``data`` as one gzip member, at the level of the state text."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def _same_exposures(old: MonitorView, new: MonitorView) -> bool:
    return (
        old.exposures == new.exposures
        and old.wallet_labels == new.wallet_labels
        and old.spender_labels == new.spender_labels
    )


def _same_positions(old: MonitorView, new: MonitorView) -> bool:
    return (
        old.snapshot == new.snapshot
        and old.tokens == new.tokens
        and old.wallet_labels == new.wallet_labels
        and old.spender_labels == new.spender_labels
        and old.unlimited_threshold == new.unlimited_threshold
        # The source label of each approval.
        and old.discovered == new.discovered
        and old.oneinch_spenders == new.oneinch_spenders
    )


def _number(value: float) -> str:
    """A sample value as Prometheus writes it (``+Inf``, ``1.5e+06``...)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _compress(families: Iterable[Family]) -> GzipMember:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    parts: list[bytes] = []
    size = 0
    for family in families:
        for text in _render(*family):
            chunk = text.encode()
            size += len(chunk)
            parts.append(compressor.compress(chunk))
    parts.append(compressor.flush())
    return GzipMember(data=b"".join(parts), text_size=size)


def _render(
    name: str, documentation: str, labels: tuple[str, ...], samples: Iterable[Sample]
) -> Iterator[str]:
    """One family's text, in pieces of at most ``LINES_PER_CHUNK`` lines."""
    full = f"{PREFIX}_{name}"
    lines = [f"# HELP {full} {documentation}\n# TYPE {full} gauge\n"]
    for values, value in samples:
        pairs = ",".join(
            f'{label}="{_escape(text)}"' for label, text in zip(labels, values, strict=True)
        )
        lines.append(
            f"{full}{{{pairs}}} {_number(value)}\n" if labels else f"{full} {_number(value)}\n"
        )
        if len(lines) >= LINES_PER_CHUNK:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)
