"""Risk evaluation in proportion to what changed since the previous evaluation.

``monitor.risk.rules.evaluate`` re-derives every finding and exposure from the whole
snapshot: with 300,000 approvals that costs seconds a poll, to find what it found last time.
``RiskEvaluator`` gives the same ``RiskReport`` (the tests compare the two over random
histories) but re-runs the per-approval rules only for the approvals whose allowance changed,
and recomputes the exposure only of the (chain, wallet, spender) whose allowances, balances
or prices changed. What it keeps between calls is the previous inputs (references to the
snapshot's mappings, which are never mutated) and the previous results.

Anything that would change many results at once starts over from nothing: a change in what
is known of a token (symbol, decimals, native), or a suppression coming into or out of
force. The fresh-approval rule is cheap (it reads only recent changes) and runs in full.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import chain
from typing import TypeVar

from monitor.domain.snapshot import AllowanceKey, BalanceKey, Snapshot
from monitor.risk.exploits import ExploitList
from monitor.risk.exposure import group_exposure, is_native, token_valuations
from monitor.risk.model import (
    Finding,
    RiskReport,
    RuleName,
    RuleSettings,
    Severity,
    SpenderExposure,
    Suppression,
)
from monitor.risk.rules import (
    ApprovalTimes,
    CodelessSpenders,
    ObservedChange,
    SpenderIndex,
    TokenIndex,
    eoa_finding,
    exploited_finding,
    finding_order,
    fresh_approvals,
    suppress,
    unlimited_finding,
    untrusted_finding,
    value_at_risk,
)

Bucket = tuple[int, str, int, str]
"""(-severity rank, rule, chain_id, wallet): the per-approval findings of one rule for one
wallet, at most (tokens x spenders) of them; a report lists buckets in this order."""
Group = tuple[int, str, str]
"""(chain_id, wallet, spender): what one exposure covers."""

K = TypeVar("K")

SHARED_KEYS = 65_536
"""Distinct (spender, token) pairs the table of shared pairs holds before it starts over
(sharing is only a saving: an equal tuple works the same)."""

_BUCKET_PREFIX = {
    rule: (-severity.rank, rule.value)
    for severity, rule in (
        (Severity.CRITICAL, RuleName.EOA_SPENDER),
        (Severity.CRITICAL, RuleName.EXPLOITED_SPENDER),
        (Severity.WARNING, RuleName.UNLIMITED_APPROVAL),
        (Severity.WARNING, RuleName.UNTRUSTED_SPENDER),
    )
}
"""The per-approval rules, with the start of their buckets."""
# Findings sort most severe first, then by rule: value_at_risk findings go right after the
# exploited_spender ones, before every warning.
_VALUE_AT_RISK_AT = (-Severity.CRITICAL.rank, RuleName.VALUE_AT_RISK.value)


class RiskEvaluator:
    """``evaluate`` with memory: call it with successive snapshots of one portfolio.

    Not thread-safe: one evaluation at a time (the daemon runs one poll at a time).
    """

    def __init__(
        self, *, spenders: SpenderIndex, exploits: ExploitList, settings: RuleSettings
    ) -> None:
        self._spenders = spenders
        self._exploits = exploits
        self._settings = settings
        self._token_facts: dict[tuple[int, str], tuple[str, int | None, bool]] | None = None
        self._in_force: tuple[Suppression, ...] = ()
        self._codeless: CodelessSpenders = frozenset()
        self._reset()

    def _reset(self) -> None:
        self._allowances: Mapping[AllowanceKey, int] = {}
        self._balances: Mapping[BalanceKey, int] = {}
        self._prices: Mapping[tuple[int, str], Decimal] = {}
        # Per-approval findings by bucket, then by (spender, token): their order in a report.
        # A change re-sorts its bucket only.
        self._buckets: dict[Bucket, dict[tuple[str, str], Finding]] = {}
        self._sorted: dict[Bucket, list[Finding]] = {}
        self._bucket_order: list[Bucket] = []
        self._head: tuple[Finding, ...] = ()  # critical per-approval findings
        self._tail: tuple[Finding, ...] = ()  # warnings
        # The approved tokens of each (chain, wallet, spender), and the spenders of a wallet.
        # (Which groups hold a token is found by a pass over the groups when its price
        # changes: an index of it held a set entry per approval, 25 MiB at 300,000.)
        self._groups: dict[Group, dict[str, int]] = {}
        self._wallet_spenders: dict[tuple[int, str], set[str]] = {}
        self._exposures: dict[Group, SpenderExposure] = {}
        self._at_risk: dict[Group, Finding] = {}
        self._exposure_order: list[Group] = []
        self._exposures_out: tuple[SpenderExposure, ...] = ()
        self._at_risk_out: tuple[Finding, ...] = ()
        # One tuple object per distinct (spender, token): 300,000 approvals name 150 pairs,
        # but each made its own, which the buckets kept (14 MiB at that size).
        self._shared_pairs: dict[tuple[str, str], tuple[str, str]] = {}
        # The last report, and what its findings were made of.
        self._report: RiskReport | None = None
        self._parts: tuple[tuple[Finding, ...], ...] = ()
        self._fresh_out: tuple[Finding, ...] = ()

    def evaluate(
        self,
        snapshot: Snapshot,
        *,
        tokens: TokenIndex,
        prices_usd: Mapping[tuple[int, str], Decimal],
        recent_events: Sequence[ObservedChange],
        now: datetime,
        codeless_spenders: CodelessSpenders = frozenset(),
        approved_at: ApprovalTimes | None = None,
    ) -> RiskReport:
        """The same report as ``rules.evaluate`` with this evaluator's settings."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        facts = {key: (t.symbol, t.decimals, t.is_native) for key, t in tokens.items()}
        in_force = tuple(s for s in self._settings.suppressions if s.until is None or now < s.until)
        if (
            facts != self._token_facts
            or in_force != self._in_force
            or codeless_spenders != self._codeless
        ):
            self._reset()
            self._token_facts, self._in_force = facts, in_force
            self._codeless = codeless_spenders

        dirty = self._update_approvals(snapshot.allowances, tokens, now)
        for chain_id, wallet, token in _changed(self._balances, snapshot.balances):
            for spender in self._wallet_spenders.get((chain_id, wallet), ()):
                if token in self._groups[(chain_id, wallet, spender)]:
                    dirty.add((chain_id, wallet, spender))
        repriced = _changed(self._prices, prices_usd)
        if repriced:
            dirty.update(self._groups_holding(repriced))
        self._update_exposures(dirty, snapshot.balances, tokens, prices_usd, now)
        self._allowances, self._balances = snapshot.allowances, snapshot.balances
        self._prices = prices_usd

        fresh = fresh_approvals(
            snapshot,
            recent_events,
            tokens=tokens,
            spenders=self._spenders,
            window=timedelta(hours=self._settings.fresh_approval_hours),
            now=now,
            approved_at=approved_at,
        )
        suppressions = self._settings.suppressions
        fresh_out = tuple(
            sorted((suppress(f, suppressions, now=now) for f in fresh), key=finding_order)
        )
        parts = (self._head, self._at_risk_out, self._tail)
        if (
            self._report is None
            or any(a is not b for a, b in zip(parts, self._parts, strict=True))
            or fresh_out != self._fresh_out
        ):
            # Something changed: a new tuple. Otherwise the same one, so that whoever keeps
            # the previous findings (the store, the metrics) can tell nothing changed at once.
            self._report = RiskReport(
                findings=(*self._head, *self._at_risk_out, *self._tail, *fresh_out),
                exposures=self._exposures_out,
            )
            self._parts, self._fresh_out = parts, fresh_out
        elif self._report.exposures is not self._exposures_out:
            self._report = RiskReport(findings=self._report.findings, exposures=self._exposures_out)
        return self._report

    # -- per-approval rules -------------------------------------------------------------------

    def _update_approvals(
        self, allowances: Mapping[AllowanceKey, int], tokens: TokenIndex, now: datetime
    ) -> set[Group]:
        """Re-run the per-approval rules for the changed approvals; the groups they touch."""
        threshold = self._settings.unlimited_threshold
        suppressions = self._settings.suppressions
        dirty: set[Group] = set()
        touched: set[Bucket] = set()
        buckets = self._buckets
        previous = self._allowances
        shared_pairs = self._shared_pairs
        # What a rule needs of a spender or a token is the same for all its approvals: asked
        # once per spender and token, so that an approval runs only the rules that can fire.
        native: dict[tuple[int, str], bool] = {}
        profiles: dict[tuple[int, str], tuple[bool, bool, bool]] = {}
        for key in _changed(previous, allowances):
            chain_id, wallet, token, spender = key
            is_coin = native.get((chain_id, token))
            if is_coin is None:
                is_coin = native[(chain_id, token)] = is_native(chain_id, token, tokens)
            if is_coin:
                continue
            if key in previous:  # only an approval that was there can have findings to drop
                for rank, rule in _BUCKET_PREFIX.values():
                    bucket = (rank, rule, chain_id, wallet)
                    found_before = buckets.get(bucket)
                    if (
                        found_before is not None
                        and found_before.pop((spender, token), None) is not None
                    ):
                        touched.add(bucket)
            allowance = allowances.get(key, 0)
            group = (chain_id, wallet, spender)
            dirty.add(group)
            if allowance > 0:
                pair = (spender, token)
                pair = shared_pairs.get(pair) or _share(shared_pairs, pair)
                profile = profiles.get((chain_id, spender))
                if profile is None:
                    profile = profiles[(chain_id, spender)] = self._profile(chain_id, spender)
                exploited, untrusted, codeless = profile
                for found in (
                    exploited
                    and exploited_finding(key, allowance, tokens, self._spenders, self._exploits),
                    allowance >= threshold
                    and unlimited_finding(key, allowance, tokens, self._spenders, threshold),
                    untrusted and untrusted_finding(key, allowance, tokens, self._spenders),
                    codeless
                    and eoa_finding(key, allowance, tokens, self._spenders, self._codeless),
                ):
                    if found:
                        bucket = (*_BUCKET_PREFIX[found.rule], chain_id, wallet)
                        if suppressions:
                            found = suppress(found, suppressions, now=now)
                        buckets.setdefault(bucket, {})[pair] = found
                        touched.add(bucket)
                self._approve(group, token, allowance)
            else:
                self._unapprove(group, token)
        if touched:
            reorder = False
            for bucket in touched:
                inner = buckets[bucket]
                if inner:
                    reorder |= bucket not in self._sorted
                    self._sorted[bucket] = [inner[k] for k in sorted(inner)]
                else:
                    del buckets[bucket], self._sorted[bucket]
                    reorder = True
            if reorder:
                self._bucket_order = sorted(self._sorted)
            order = self._bucket_order
            split = bisect.bisect_left(order, _VALUE_AT_RISK_AT)
            lists = self._sorted
            self._head = tuple(chain.from_iterable(map(lists.__getitem__, order[:split])))
            self._tail = tuple(chain.from_iterable(map(lists.__getitem__, order[split:])))
        return dirty

    def _profile(self, chain_id: int, spender: str) -> tuple[bool, bool, bool]:
        """Whether the exploited, untrusted and EOA rules can fire for ``spender``'s
        approvals (each rule still decides for itself: this only skips those that cannot)."""
        known = self._spenders.get((chain_id, spender))
        return (
            self._exploits.lookup(chain_id, spender) is not None,
            not (known is not None and known.trusted),
            (chain_id, spender) in self._codeless,
        )

    def _approve(self, group: Group, token: str, allowance: int) -> None:
        approved = self._groups.get(group)
        if approved is None:
            approved = self._groups[group] = {}
            self._wallet_spenders.setdefault(group[:2], set()).add(group[2])
        approved[token] = allowance

    def _unapprove(self, group: Group, token: str) -> None:
        approved = self._groups.get(group)
        if approved is None or approved.pop(token, None) is None:
            return
        if not approved:
            del self._groups[group]
            self._wallet_spenders[group[:2]].discard(group[2])

    # -- exposures and value at risk ----------------------------------------------------------

    def _groups_holding(self, tokens: set[tuple[int, str]]) -> Iterator[Group]:
        """The groups with an approval of any of ``tokens`` ((chain_id, token) pairs)."""
        by_chain: dict[int, set[str]] = {}
        for chain_id, token in tokens:
            by_chain.setdefault(chain_id, set()).add(token)
        for group, approved in self._groups.items():
            wanted = by_chain.get(group[0])
            if wanted is not None and not approved.keys().isdisjoint(wanted):
                yield group

    def _update_exposures(
        self,
        dirty: set[Group],
        balances: Mapping[BalanceKey, int],
        tokens: TokenIndex,
        prices_usd: Mapping[tuple[int, str], Decimal],
        now: datetime,
    ) -> None:
        if not dirty:
            return
        valuations = token_valuations(tokens, prices_usd)
        reorder = False
        for group in dirty:
            approved = self._groups.get(group)
            self._at_risk.pop(group, None)
            if approved is None:
                reorder |= self._exposures.pop(group, None) is not None
                continue
            exposure = group_exposure(group, approved, balances, valuations)
            reorder |= group not in self._exposures
            self._exposures[group] = exposure
            for found in value_at_risk(
                (exposure,),
                tokens=tokens,
                spenders=self._spenders,
                threshold_usd=self._settings.value_at_risk_usd,
            ):
                self._at_risk[group] = suppress(found, self._settings.suppressions, now=now)
        if reorder:
            self._exposure_order = sorted(self._exposures)
        self._exposures_out = tuple(self._exposures[g] for g in self._exposure_order)
        self._at_risk_out = tuple(
            self._at_risk[g] for g in self._exposure_order if g in self._at_risk
        )


def _share(shared: dict[K, K], key: K) -> K:
    """``key``, from now on the one object ``shared`` hands out for keys equal to it."""
    if len(shared) >= SHARED_KEYS:
        shared.clear()
    shared[key] = key
    return key


def _changed(old: Mapping[K, object], new: Mapping[K, object]) -> set[K]:
    """The keys whose value differs (absent counts as a value), in C where possible."""
    if old is new or old == new:
        return set()
    if not old or not new:  # from nothing, or to nothing: every key (no pair per key made)
        return set(new or old)
    return {key for key, _ in old.items() ^ new.items()}
