"""The risk rules: pure functions from a snapshot (and what is known about it) to findings.

- ``unlimited_approval`` (warning): an allowance at or above ``risk.unlimited_threshold``;
- ``untrusted_spender`` (warning): a non-zero allowance to a spender not marked ``trusted``;
- ``exploited_spender`` (critical): a non-zero allowance to a known-exploited spender;
- ``value_at_risk`` (critical): a (chain, wallet, spender) whose value at risk exceeds
  ``risk.value_at_risk_usd``;
- ``fresh_approval`` (info): a grant or increase seen within ``risk.fresh_approval_hours``
  that is still non-zero; for an approval discovered from chain logs, dated by the block time
  of its newest ``Approval`` log (a true "approved at", not "first seen");
- ``eoa_spender`` (critical): a non-zero allowance to an address with no contract code. A
  plain wallet as spender is the signature of phishing: no protocol needs it;
- ``sources_disagree`` (warning): 1inch and the chain reader both read an allowance and gave
  different amounts in two polls in a row (``sources_disagree``, from the poll cycle).

Every finding but ``value_at_risk`` is per approval (chain, wallet, token, spender). The
native coin never counts: it needs no approval. A finding matched by an active ``risk.ignore``
entry is still returned, with ``suppressed`` set and the entry's reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from typing import Protocol

from monitor.domain.addresses import to_checksum
from monitor.domain.model import UINT256_MAX, Token, format_units
from monitor.domain.snapshot import AllowanceKey, Change, ChangeEvent, Snapshot
from monitor.risk.exploits import ExploitList
from monitor.risk.exposure import is_native, spender_exposures
from monitor.risk.model import (
    Finding,
    FindingKey,
    KnownSpender,
    RiskReport,
    RuleName,
    RuleSettings,
    Severity,
    SpenderExposure,
    Suppression,
)

__all__ = [
    "Finding",
    "FindingKey",
    "ObservedChange",
    "RiskReport",
    "RuleName",
    "Severity",
    "SpenderExposure",
    "disagreement_finding",
    "eoa_finding",
    "evaluate",
    "exploited_finding",
    "exploited_spenders",
    "finding_order",
    "fresh_approvals",
    "suppress",
    "unlimited_approvals",
    "unlimited_finding",
    "untrusted_finding",
    "untrusted_spenders",
    "value_at_risk",
]


class ObservedChange(Protocol):
    """A change event and when it was observed: ``monitor.store.snapshots.StoredEvent``
    fits (a protocol, so that this pure module does not import the SQL store)."""

    @property
    def observed_at(self) -> datetime: ...

    @property
    def event(self) -> ChangeEvent: ...


CodelessSpenders = frozenset[tuple[int, str]]
"""(chain_id, spender) of spenders known to have no contract code (read on-chain)."""
ApprovalTimes = Mapping[AllowanceKey, datetime]
"""When each discovered approval was last approved: its newest ``Approval`` log's block time."""

SpenderIndex = Mapping[tuple[int, str], KnownSpender]
"""The spenders the user named, by (chain_id, lowercase address)."""
TokenIndex = Mapping[tuple[int, str], Token]

FRESH_CHANGES = frozenset({Change.GRANTED, Change.INCREASED, Change.BECAME_UNLIMITED})
"""The changes that make an approval "fresh" (a decrease or a revoke does not)."""

_NAMED_AMOUNTS = {UINT256_MAX: "2^256-1", 2**160 - 1: "2^160-1", 2**96 - 1: "2^96-1"}
_CENTS = Decimal("0.01")
"""EIP-55 spelling of the few token and spender addresses named in findings, hashed once each."""
_WIDE = Context(prec=200)  # formats any sum of uint256 amounts times a price, to the cent


def evaluate(
    snapshot: Snapshot,
    *,
    tokens: TokenIndex,
    spenders: SpenderIndex,
    exploits: ExploitList,
    prices_usd: Mapping[tuple[int, str], Decimal],
    recent_events: Sequence[ObservedChange],
    settings: RuleSettings,
    now: datetime,
    codeless_spenders: CodelessSpenders = frozenset(),
    approved_at: ApprovalTimes | None = None,
) -> RiskReport:
    """Every rule over ``snapshot``, suppressions applied, findings in a stable order.

    ``tokens`` gives symbols and decimals; ``spenders`` the spenders the user named (one that
    is absent is untrusted); ``prices_usd`` USD per whole token (absent: unknown);
    ``recent_events`` at least the changes of the last ``settings.fresh_approval_hours``;
    ``codeless_spenders`` the spenders read on-chain to have no code; ``approved_at`` when
    each discovered approval was last approved on-chain.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    exposures = spender_exposures(snapshot, tokens=tokens, prices_usd=prices_usd)
    findings = [
        *unlimited_approvals(
            snapshot, tokens=tokens, spenders=spenders, threshold=settings.unlimited_threshold
        ),
        *untrusted_spenders(snapshot, tokens=tokens, spenders=spenders),
        *exploited_spenders(snapshot, tokens=tokens, spenders=spenders, exploits=exploits),
        *(
            found
            for key, allowance in _approvals(snapshot, tokens)
            if (found := eoa_finding(key, allowance, tokens, spenders, codeless_spenders))
            is not None
        ),
        *value_at_risk(
            exposures, tokens=tokens, spenders=spenders, threshold_usd=settings.value_at_risk_usd
        ),
        *fresh_approvals(
            snapshot,
            recent_events,
            tokens=tokens,
            spenders=spenders,
            window=timedelta(hours=settings.fresh_approval_hours),
            now=now,
            approved_at=approved_at,
        ),
    ]
    suppressed = (suppress(f, settings.suppressions, now=now) for f in findings)
    return RiskReport(findings=tuple(sorted(suppressed, key=finding_order)), exposures=exposures)


# -- the rules ----------------------------------------------------------------------------------


def unlimited_approvals(
    snapshot: Snapshot, *, tokens: TokenIndex, spenders: SpenderIndex, threshold: int
) -> list[Finding]:
    """Warning: an allowance at or above ``threshold`` (the native coin never counts)."""
    return [
        found
        for key, allowance in _approvals(snapshot, tokens)
        if (found := unlimited_finding(key, allowance, tokens, spenders, threshold)) is not None
    ]


def untrusted_spenders(
    snapshot: Snapshot, *, tokens: TokenIndex, spenders: SpenderIndex
) -> list[Finding]:
    """Warning: a non-zero allowance to a spender the config does not mark ``trusted``."""
    return [
        found
        for key, allowance in _approvals(snapshot, tokens)
        if (found := untrusted_finding(key, allowance, tokens, spenders)) is not None
    ]


def exploited_spenders(
    snapshot: Snapshot, *, tokens: TokenIndex, spenders: SpenderIndex, exploits: ExploitList
) -> list[Finding]:
    """Critical: a non-zero allowance to a spender on the exploited list."""
    return [
        found
        for key, allowance in _approvals(snapshot, tokens)
        if (found := exploited_finding(key, allowance, tokens, spenders, exploits)) is not None
    ]


# One approval at a time (a non-zero allowance of a token that is not the native coin): the
# rules above, and the incremental evaluator, which re-runs them for changed approvals only.


def unlimited_finding(
    key: AllowanceKey, allowance: int, tokens: TokenIndex, spenders: SpenderIndex, threshold: int
) -> Finding | None:
    if allowance < threshold:
        return None
    chain_id, _, token, spender = key
    return _finding(
        RuleName.UNLIMITED_APPROVAL,
        Severity.WARNING,
        key,
        _shared_if_named(
            f"unlimited {_symbol(chain_id, token, tokens)} approval "
            f"({_amount(allowance, chain_id, token, tokens)}) to "
            f"{_spender_name(chain_id, spender, spenders)}",
            allowance,
        ),
    )


def untrusted_finding(
    key: AllowanceKey, allowance: int, tokens: TokenIndex, spenders: SpenderIndex
) -> Finding | None:
    chain_id, _, token, spender = key
    known = spenders.get((chain_id, spender))
    if known is not None and known.trusted:
        return None
    why = "not in the config" if known is None else "not marked trusted"
    return _finding(
        RuleName.UNTRUSTED_SPENDER,
        Severity.WARNING,
        key,
        _shared_if_named(
            f"{_amount(allowance, chain_id, token, tokens)} approved to "
            f"{_spender_name(chain_id, spender, spenders)}, {why}",
            allowance,
        ),
    )


def exploited_finding(
    key: AllowanceKey,
    allowance: int,
    tokens: TokenIndex,
    spenders: SpenderIndex,
    exploits: ExploitList,
) -> Finding | None:
    chain_id, _, token, spender = key
    info = exploits.lookup(chain_id, spender)
    if info is None:
        return None
    when = f", {info.date.isoformat()}" if info.date else ""
    known = spenders.get((chain_id, spender))
    trusted = " (marked trusted in the config)" if known and known.trusted else ""
    return _finding(
        RuleName.EXPLOITED_SPENDER,
        Severity.CRITICAL,
        key,
        _shared_if_named(
            f"{_amount(allowance, chain_id, token, tokens)} approved to "
            f"{_spender_name(chain_id, spender, spenders)}{trusted}, exploited in "
            f"{info.name}{when} (source: {info.source}): revoke it",
            allowance,
        ),
    )


def eoa_finding(
    key: AllowanceKey,
    allowance: int,
    tokens: TokenIndex,
    spenders: SpenderIndex,
    codeless: CodelessSpenders,
) -> Finding | None:
    chain_id, _, token, spender = key
    if (chain_id, spender) not in codeless:
        return None
    return _finding(
        RuleName.EOA_SPENDER,
        Severity.CRITICAL,
        key,
        _shared_if_named(
            f"{_amount(allowance, chain_id, token, tokens)} approved to "
            f"{_spender_name(chain_id, spender, spenders)}, an address with no contract code "
            "(a plain wallet: the signature of a phishing approval)",
            allowance,
        ),
    )


def disagreement_finding(
    key: AllowanceKey,
    amounts: Mapping[str, int],
    tokens: TokenIndex,
    spenders: SpenderIndex,
) -> Finding:
    """Warning: the sources read different allowances for ``key`` (``amounts`` by source)
    in two polls in a row; the snapshot keeps the chain's live read."""
    chain_id, _, token, spender = key
    said = ", ".join(
        f"{source} says {_amount(amount, chain_id, token, tokens)}"
        for source, amount in sorted(amounts.items())
    )
    return _finding(
        RuleName.SOURCES_DISAGREE,
        Severity.WARNING,
        key,
        f"{_symbol(chain_id, token, tokens)} allowance to "
        f"{_spender_name(chain_id, spender, spenders)}: {said}, in two polls in a row",
    )


def value_at_risk(
    exposures: Iterable[SpenderExposure],
    *,
    tokens: TokenIndex,
    spenders: SpenderIndex,
    threshold_usd: Decimal,
) -> list[Finding]:
    """Critical: a spender that could move more than ``threshold_usd`` from one wallet.

    The detail names the threshold, not the amount: a finding is stored, and a detail with
    the amount would rewrite its row at every price tick or balance change of the wallet.
    The amount now is the ``exposure_monitor_at_risk_usd`` gauge and the status page's."""
    findings = []
    for e in exposures:
        if e.at_risk_usd <= threshold_usd:
            continue
        detail = (
            f"{_spender_name(e.chain_id, e.spender, spenders)} could move more than "
            f"{_usd(threshold_usd)} USD (risk.value_at_risk_usd)"
        )
        if e.missing_prices:
            symbols = ", ".join(_symbol(e.chain_id, t, tokens) for t in e.missing_prices)
            detail += f"; plus {len(e.missing_prices)} unpriced token(s) not counted: {symbols}"
        findings.append(
            Finding(
                rule=RuleName.VALUE_AT_RISK,
                severity=Severity.CRITICAL,
                chain_id=e.chain_id,
                wallet=e.wallet,
                spender=e.spender,
                token=None,
                detail=detail,
            )
        )
    return findings


def fresh_approvals(
    snapshot: Snapshot,
    recent_events: Iterable[ObservedChange],
    *,
    tokens: TokenIndex,
    spenders: SpenderIndex,
    window: timedelta,
    now: datetime,
    approved_at: ApprovalTimes | None = None,
) -> list[Finding]:
    """Info: an allowance granted or raised at most ``window`` before ``now`` and still
    non-zero. One finding per approval, describing its latest such change; an approval in
    ``approved_at`` (discovered from logs), granted or raised within the window, is dated by
    its newest ``Approval`` log instead."""
    dated = approved_at or {}
    latest: dict[AllowanceKey, ObservedChange] = {}
    # A discovered approval is dated by its log, but only a grant or an increase seen in the
    # window makes it fresh: a log also comes with a decrease, and OpenZeppelin 4 tokens emit
    # one on every transferFrom that spends a finite allowance.
    granted_lately: set[AllowanceKey] = set()
    for stored in recent_events:
        event = stored.event
        if event.spender is None or event.change not in FRESH_CHANGES:
            continue
        if (event.chain_id, event.wallet, event.token, event.spender) in dated:
            if now - stored.observed_at <= window:
                granted_lately.add((event.chain_id, event.wallet, event.token, event.spender))
            continue
        if now - stored.observed_at > window:
            continue
        key = (event.chain_id, event.wallet, event.token, event.spender)
        if snapshot.allowance(key) <= 0 or is_native(event.chain_id, event.token, tokens):
            continue
        if key not in latest or stored.observed_at >= latest[key].observed_at:
            latest[key] = stored
    findings = []
    for key, stored in sorted(latest.items()):
        chain_id, _, token, spender = key
        event = stored.event
        findings.append(
            _finding(
                RuleName.FRESH_APPROVAL,
                Severity.INFO,
                key,
                f"{_symbol(chain_id, token, tokens)} approval to "
                f"{_spender_name(chain_id, spender, spenders)} "
                f"{event.change.value.replace('_', ' ')} at {_iso(stored.observed_at)} "
                f"({_amount(event.old, chain_id, token, tokens)} -> "
                f"{_amount(event.new, chain_id, token, tokens)}); "
                f"now {_amount(snapshot.allowance(key), chain_id, token, tokens)}",
            )
        )
    for key, approved in dated.items():
        if key not in granted_lately or now - approved > window or snapshot.allowance(key) <= 0:
            continue
        chain_id, _, token, spender = key
        if is_native(chain_id, token, tokens):
            continue
        findings.append(
            _finding(
                RuleName.FRESH_APPROVAL,
                Severity.INFO,
                key,
                f"{_symbol(chain_id, token, tokens)} approval to "
                f"{_spender_name(chain_id, spender, spenders)} approved at {_iso(approved)} "
                f"(block time of its Approval log); "
                f"now {_amount(snapshot.allowance(key), chain_id, token, tokens)}",
            )
        )
    findings.sort(key=lambda f: (f.chain_id, f.wallet, f.token or "", f.spender))
    return findings


# -- suppression --------------------------------------------------------------------------------


def suppress(finding: Finding, suppressions: Iterable[Suppression], *, now: datetime) -> Finding:
    """``finding`` marked suppressed by the first matching entry still in force at ``now``."""
    for s in suppressions:
        if _matches(s, finding, now):
            return replace(finding, suppressed=True, suppression_reason=s.reason)
    return finding


def _matches(s: Suppression, f: Finding, now: datetime) -> bool:
    if s.until is not None and now >= s.until:
        return False
    wanted = (
        (s.wallet, f.wallet),
        (s.spender, f.spender),
        (s.token, f.token),
        (s.rule, f.rule),
        (s.chain_id, f.chain_id),
    )
    return all(given is None or given == actual for given, actual in wanted)


# -- helpers ------------------------------------------------------------------------------------


def _approvals(snapshot: Snapshot, tokens: TokenIndex) -> list[tuple[AllowanceKey, int]]:
    return [
        (key, allowance)
        for key, allowance in sorted(snapshot.allowances.items())
        if allowance > 0 and not is_native(key[0], key[2], tokens)
    ]


SHARED_DETAILS = 4096
"""At most this many distinct details are shared (``_shared_if_named``) before the table
starts over, so that it stays small whatever comes and goes."""
_shared_details: dict[str, str] = {}


def _shared_if_named(detail: str, amount: int) -> str:
    """``detail`` as one string object shared by every equal detail, when its amount is a
    named one (2^256-1, ...): it then names no number of its own and repeats across wallets
    and tokens (at the large benchmark, 100,000 of 266,000 findings' details, 9.2 MiB)."""
    if amount not in _NAMED_AMOUNTS:
        return detail
    shared = _shared_details.get(detail)
    if shared is None:
        if len(_shared_details) >= SHARED_DETAILS:
            _shared_details.clear()
        shared = _shared_details.setdefault(detail, detail)
    return shared


def _finding(rule: RuleName, severity: Severity, key: AllowanceKey, detail: str) -> Finding:
    chain_id, wallet, token, spender = key
    return Finding(
        rule=rule,
        severity=severity,
        chain_id=chain_id,
        wallet=wallet,
        spender=spender,
        token=token,
        detail=detail,
    )


def finding_order(f: Finding) -> tuple[int, str, int, str, str, str]:
    """Where ``f`` goes in a report: most severe first, then by rule and key."""
    return (-f.severity.rank, f.rule, f.chain_id, f.wallet, f.spender, f.token or "")


def _symbol(chain_id: int, token: str, tokens: TokenIndex) -> str:
    meta = tokens.get((chain_id, token))
    return meta.symbol if meta is not None and meta.symbol else to_checksum(token)


def _amount(amount: int, chain_id: int, token: str, tokens: TokenIndex) -> str:
    if amount in _NAMED_AMOUNTS:
        return _NAMED_AMOUNTS[amount]
    meta = tokens.get((chain_id, token))
    decimals = meta.decimals if meta is not None else None
    text = format_units(amount, decimals)
    return text if decimals is None else f"{text} {_symbol(chain_id, token, tokens)}"


def _spender_name(chain_id: int, spender: str, spenders: SpenderIndex) -> str:
    known = spenders.get((chain_id, spender))
    return known.label if known is not None and known.label else to_checksum(spender)


def _usd(amount: Decimal) -> str:
    try:
        return f"{_WIDE.quantize(amount, _CENTS):,}"
    except InvalidOperation:  # more than 200 digits: absurd, but still worth showing
        return str(amount)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
