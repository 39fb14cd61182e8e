"""Prometheus metrics: event counters, and mirrored state built at scrape time.

State (allowances, balances, findings, freshness) is never set on gauges: a custom collector
emits it from a ``MonitorView``, so a revoked approval's series is gone at the next scrape.
The exposition text of the state is rendered once per view, off the event loop
(``render_state``), so a scrape only copies bytes: with hundreds of thousands of series,
formatting them at every scrape would hold the loop for seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.utils import floatToGoString

from monitor.daemon.view import MonitorView

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
)
BALANCE_LABELS = ("chain_id", "wallet", "token", "symbol", "wallet_label")
FINDING_LABELS = ("rule", "severity", "chain_id", "wallet", "spender", "token")

Sample = tuple[tuple[str, ...], float]
Family = tuple[str, str, tuple[str, ...], Iterable[Sample]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionSeries:
    """The precomputed position samples of one view, capped."""

    allowance: tuple[Sample, ...] = ()
    unlimited: tuple[Sample, ...] = ()
    balance: tuple[Sample, ...] = ()
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
        self.allowance_changes = Counter(
            f"{PREFIX}_allowance_changes",
            "Recorded change events, by kind (granted, revoked, ..., balance_changed).",
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
            self.allowance_changes.labels(change=change)


def clip(text: str) -> str:
    """Upstream text in a label: bounded length (escaping is the exposition's job)."""
    return text if len(text) <= MAX_LABEL_TEXT else text[: MAX_LABEL_TEXT - 1] + "…"


def whole_tokens(amount: int, decimals: int) -> float:
    return float(Decimal(amount).scaleb(-decimals))


def position_series(view: MonitorView, max_series: int) -> PositionSeries:
    """Allowance, unlimited and balance samples for ``view``, at most ``max_series`` in all.

    When capped, unlimited approvals go first, then other allowances, then balances, so the
    series that alerts depend on are the last to be dropped.
    """
    tokens = view.tokens
    unlimited: list[tuple[str, ...]] = []
    finite: list[Sample] = []
    for (chain_id, wallet, address, spender), amount in sorted(view.snapshot.allowances.items()):
        token = tokens.get((chain_id, address))
        if token is not None and token.is_native:
            continue
        labels = (
            str(chain_id),
            wallet,
            address,
            spender,
            clip(token.symbol) if token else "",
            view.wallet_labels.get(wallet, ""),
            view.spender_labels.get((chain_id, spender), ""),
        )
        if amount >= view.unlimited_threshold:
            unlimited.append(labels)
        elif token is not None and token.decimals is not None:
            finite.append((labels, whole_tokens(amount, token.decimals)))
    balances: list[Sample] = []
    for (chain_id, wallet, address), amount in sorted(view.snapshot.balances.items()):
        token = tokens.get((chain_id, address))
        if token is not None and token.decimals is not None:
            balance_labels = (
                str(chain_id),
                wallet,
                address,
                clip(token.symbol),
                view.wallet_labels.get(wallet, ""),
            )
            balances.append((balance_labels, whole_tokens(amount, token.decimals)))

    # An unlimited approval costs two series (allowance +Inf and allowance_unlimited 1).
    kept_unlimited = unlimited[: max_series // 2]
    budget = max_series - 2 * len(kept_unlimited)
    kept_finite = finite[:budget]
    kept_balances = balances[: budget - len(kept_finite)]
    total = 2 * len(unlimited) + len(finite) + len(balances)
    kept = 2 * len(kept_unlimited) + len(kept_finite) + len(kept_balances)
    return PositionSeries(
        allowance=tuple([(labels, math.inf) for labels in kept_unlimited] + kept_finite),
        unlimited=tuple((labels, 1.0) for labels in kept_unlimited),
        balance=tuple(kept_balances),
        dropped=total - kept,
    )


def position_families(series: PositionSeries) -> Iterator[Family]:
    """Allowances and balances: (name, help, label names, samples)."""
    yield (
        "allowance",
        "Allowance in whole tokens (+Inf when unlimited).",
        POSITION_LABELS,
        series.allowance,
    )
    yield (
        "allowance_unlimited",
        "1 for each unlimited approval.",
        POSITION_LABELS,
        series.unlimited,
    )
    yield ("balance", "Balance in whole tokens.", BALANCE_LABELS, series.balance)


def finding_family(view: MonitorView) -> Family:
    return (
        "finding",
        "1 per open, unsuppressed finding.",
        FINDING_LABELS,
        tuple(
            ((f.rule, f.severity, str(f.chain_id), f.wallet, f.spender, f.token or ""), 1.0)
            for f in view.findings
            if not f.suppressed
        ),
    )


def summary_families(view: MonitorView) -> Iterator[Family]:
    """Value at risk and freshness: small, and rendered anew for every view."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderedState:
    """The state metrics of one view as exposition text, and what went into it."""

    view: MonitorView
    series: PositionSeries
    text: bytes
    position_text: str
    finding_text: str


def render_state(
    view: MonitorView, max_series: int, previous: RenderedState | None = None
) -> RenderedState:
    """Render ``view``'s state metrics in the Prometheus text format (0.0.4).

    The position and finding families (nearly all of the bytes) are reused from ``previous``
    when what they show is unchanged, as it is after most polls.
    """
    if previous is not None and _same_positions(previous.view, view):
        series, position_text = previous.series, previous.position_text
    else:
        series = position_series(view, max_series)
        position_text = "".join(_render(*family) for family in position_families(series))
    if previous is not None and previous.view.findings == view.findings:
        finding_text = previous.finding_text
    else:
        finding_text = _render(*finding_family(view))
    rest = "".join(_render(*family) for family in summary_families(view))
    return RenderedState(
        view=view,
        series=series,
        text=(position_text + finding_text + rest).encode(),
        position_text=position_text,
        finding_text=finding_text,
    )


def _same_positions(old: MonitorView, new: MonitorView) -> bool:
    return (
        old.snapshot == new.snapshot
        and old.tokens == new.tokens
        and old.wallet_labels == new.wallet_labels
        and old.spender_labels == new.spender_labels
        and old.unlimited_threshold == new.unlimited_threshold
    )


def _number(value: float) -> str:
    """A sample value as Prometheus writes it (``+Inf``, ``1.5e+06``...)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _render(
    name: str, documentation: str, labels: tuple[str, ...], samples: Iterable[Sample]
) -> str:
    full = f"{PREFIX}_{name}"
    lines = [f"# HELP {full} {documentation}\n# TYPE {full} gauge\n"]
    for values, value in samples:
        pairs = ",".join(
            f'{label}="{_escape(text)}"' for label, text in zip(labels, values, strict=True)
        )
        lines.append(f"{full}{{{pairs}}} {_number(value)}\n")
    return "".join(lines)
