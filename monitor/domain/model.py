"""Domain values: tokens, positions and the outcome of a poll. Frozen, exact, UTC."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from monitor.domain.addresses import NATIVE_TOKEN

UINT256_MAX = 2**256 - 1
"""The largest on-chain amount, and the usual "unlimited" approval."""


def parse_amount(text: object) -> int:
    """Parse a base-unit amount as the API sends it: a decimal string of 0..2^256-1.

    Raises ``ValueError`` naming the value for anything else (floats, exponents, negatives,
    numbers sent as JSON numbers, empty strings), so a bad amount never becomes a silent 0.
    """
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        raise ValueError(f"amount must be a string of decimal digits, got {text!r:.80}")
    if len(text) > 78:
        raise ValueError(f"amount has {len(text)} digits, more than a uint256 can hold")
    value = int(text)
    if value > UINT256_MAX:
        raise ValueError(f"amount {text} exceeds 2^256-1")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """A token as 1inch describes it. ``decimals`` is None when upstream did not say."""

    chain_id: int
    address: str
    symbol: str
    name: str
    decimals: int | None
    tags: tuple[str, ...] = ()

    @property
    def is_native(self) -> bool:
        """The chain's native coin: it needs no approval, so its "allowance" is never a risk."""
        return self.address == NATIVE_TOKEN or "native" in self.tags


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """What one wallet holds of one token, and what one spender may take of it."""

    chain_id: int
    wallet: str
    spender: str
    token: Token
    balance: int
    allowance: int
    source: str = "1inch"
    """``"1inch"`` (the Balance API) or ``"chain"`` (discovered from logs, read on-chain)."""

    @property
    def key(self) -> tuple[int, str, str, str]:
        return (self.chain_id, self.wallet, self.token.address, self.spender)


@dataclass(frozen=True, slots=True, kw_only=True)
class Coverage:
    """What one successful batch observed completely: these wallets, for this spender on
    this chain, and either the listed ``tokens`` or (``tokens is None``) every token except
    ``except_tokens``."""

    chain_id: int
    spender: str
    wallets: frozenset[str]
    tokens: frozenset[str] | None = None
    except_tokens: frozenset[str] = frozenset()

    def covers_token(self, token: str) -> bool:
        if self.tokens is not None:
            return token in self.tokens
        return token not in self.except_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchOutcome:
    """One request (or one wallet's custom-token request) of a poll, successful or not.

    When ``error`` is None the batch is complete: every (wallet, token) pair of ``wallets``
    that is absent from ``positions`` was observed as zero balance and zero allowance (the API
    drops empty tokens under ``filterEmpty``). When ``error`` is set nothing about ``wallets``
    was observed, and nothing may be inferred from the absence of their positions.
    """

    chain_id: int
    spender: str
    wallets: tuple[str, ...]
    kind: str  # "aggregated", "custom" or "discovered"
    source: str = "1inch"
    """Where the answer came from: ``"1inch"`` (the Balance API) or ``"chain"`` (discovered
    from logs and read live on-chain)."""
    tokens: frozenset[str] | None = None
    """The tokens this batch asked about; None: every token 1inch lists, minus
    ``except_tokens`` (the chain's custom tokens, which have their own batches)."""
    except_tokens: frozenset[str] = frozenset()
    positions: tuple[Position, ...] = ()
    request_id: str | None = None
    error: str | None = None
    error_reason: str | None = None
    answer_digest: bytes | None = None
    """A digest of the answer's bytes, when the source keeps one: the same request answered
    with the same digest observed the very same positions (the store then has nothing to
    compare, see ``SqlSnapshotStore``). None: unknown, never taken for a repeat."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True, kw_only=True)
class PollResult:
    """Everything one poll of every (chain, spender, wallet batch) returned."""

    started_at: datetime
    finished_at: datetime
    batches: tuple[BatchOutcome, ...] = field(default_factory=tuple)
    disagreements: Mapping[tuple[int, str, str, str], Mapping[str, int]] = field(
        default_factory=dict
    )
    """Allowances two sources both read, and read differently, by source (see
    ``monitor.domain.records.source_disagreements``); empty with one source."""

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.batches)

    @property
    def positions(self) -> tuple[Position, ...]:
        return tuple(p for b in self.batches for p in b.positions)

    @property
    def position_count(self) -> int:
        """``len(positions)``, without copying them."""
        return sum(len(b.positions) for b in self.batches)

    @property
    def failures(self) -> tuple[BatchOutcome, ...]:
        return tuple(b for b in self.batches if not b.ok)

    def coverages(self) -> tuple[Coverage, ...]:
        """What the successful batches observed completely (see ``snapshot.observe``)."""
        return tuple(
            Coverage(
                chain_id=b.chain_id,
                spender=b.spender,
                wallets=frozenset(b.wallets),
                tokens=b.tokens,
                except_tokens=b.except_tokens,
            )
            for b in self.batches
            if b.ok
        )


def is_unlimited(position: Position, threshold: int) -> bool:
    """True for an unlimited approval. The native coin needs no approval, so never."""
    return not position.token.is_native and position.allowance >= threshold


def format_units(amount: int, decimals: int | None) -> str:
    """``amount`` base units in whole tokens, exactly: 1234500000 with 6 decimals -> 1,234.5."""
    if decimals is None:
        return f"{amount:,} units"
    whole, fraction = divmod(amount, 10**decimals)
    text = f"{whole:,}"
    if fraction:
        text += "." + f"{fraction:0{decimals}d}".rstrip("0")
    return text
