"""What the risk rules are given and what they produce. Frozen, exact, pure.

Given: ``RuleSettings`` (thresholds, the fresh-approval window, suppressions) and the
``KnownSpender``s, plain values that ``monitor.config`` builds from the YAML file (the risk
package never reads configuration). Produced: ``Finding``s and ``SpenderExposure``s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

DEFAULT_UNLIMITED_THRESHOLD = 2**96 - 1
"""At or above this an approval counts as unlimited: it catches the uint256, uint160 (Permit2)
and uint96 (UNI, COMP) "infinite" conventions, and infinite allowances that a token
decrements on each transfer."""
DEFAULT_VALUE_AT_RISK_USD = Decimal(10_000)
DEFAULT_FRESH_APPROVAL_HOURS = 24.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppression:
    """A ``risk.ignore`` entry: findings it matches are still reported, marked suppressed.

    Every field given must equal the finding's; at least one of ``wallet``, ``spender``,
    ``token`` and ``rule`` is given. It applies while ``now < until`` (forever when None).
    """

    reason: str
    wallet: str | None = None
    spender: str | None = None
    token: str | None = None
    rule: str | None = None
    chain_id: int | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSettings:
    """What the user set for the rules (``risk:`` in the config file)."""

    unlimited_threshold: int = DEFAULT_UNLIMITED_THRESHOLD
    value_at_risk_usd: Decimal = DEFAULT_VALUE_AT_RISK_USD
    """A spender that could move more than this from one wallet (USD) is critical."""
    fresh_approval_hours: float = DEFAULT_FRESH_APPROVAL_HOURS
    suppressions: tuple[Suppression, ...] = ()
    """In order: a finding is suppressed by the first that matches and is in force."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KnownSpender:
    """A spender the user named for a chain: how findings call it, whether it is trusted.

    A spender the user did not name is untrusted and called by its EIP-55 address.
    """

    label: str | None = None
    trusted: bool = False


FindingKey = tuple[str, int, str, str, str | None]
"""(rule, chain_id, wallet, spender, token or None), addresses lowercase."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical: for ordering, higher is worse."""
        return _RANKS[self]


_RANKS = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class RuleName(StrEnum):
    """The rules, by the names used in findings, metrics and ``risk.ignore[].rule``."""

    UNLIMITED_APPROVAL = "unlimited_approval"
    UNTRUSTED_SPENDER = "untrusted_spender"
    EXPLOITED_SPENDER = "exploited_spender"
    VALUE_AT_RISK = "value_at_risk"
    FRESH_APPROVAL = "fresh_approval"
    EOA_SPENDER = "eoa_spender"
    SOURCES_DISAGREE = "sources_disagree"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One rule firing for one approval, or (``value_at_risk``, ``token`` None) for one
    (chain, wallet, spender). A suppressed finding is still reported, marked as such."""

    rule: RuleName
    severity: Severity
    chain_id: int
    wallet: str
    spender: str
    token: str | None
    detail: str
    suppressed: bool = False
    suppression_reason: str | None = None

    @property
    def key(self) -> FindingKey:
        """Identifies the finding across evaluations (detail and suppression may change)."""
        return (self.rule, self.chain_id, self.wallet, self.spender, self.token)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpenderExposure:
    """What one spender could move from one wallet on one chain right now, in USD.

    ``at_risk_usd`` is exact: the sum over approved tokens of min(balance, allowance) in whole
    tokens times the USD price. It covers only the tokens whose value is known:
    ``priced_tokens`` of them (a token with a zero balance counts, as it is worth 0 whatever
    its price). ``missing_prices`` lists the approved tokens with something at risk whose
    price or decimals are unknown: they are left out of the sum, never counted as zero, so
    when it is non-empty ``at_risk_usd`` is a lower bound.
    """

    chain_id: int
    wallet: str
    spender: str
    at_risk_usd: Decimal
    priced_tokens: int
    missing_prices: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every approved token was valued, so ``at_risk_usd`` is the full value."""
        return not self.missing_prices


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskReport:
    """Every finding (most severe first, then by key) and every exposure (by key)."""

    findings: tuple[Finding, ...] = ()
    exposures: tuple[SpenderExposure, ...] = ()

    @property
    def active(self) -> tuple[Finding, ...]:
        """The findings that are not suppressed."""
        return tuple(f for f in self.findings if not f.suppressed)
