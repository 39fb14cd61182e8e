"""Value at risk, exactly: what each spender could move from each wallet right now, in USD.

A spender can take at most min(balance, allowance) of a token, so per (chain, wallet,
spender) the value at risk is the sum over approved tokens of that amount in whole tokens
times the token's USD price. Amounts reach 78 digits and prices carry arbitrary decimals, so
every step is ``Decimal`` arithmetic in a context wide enough never to round (and that traps
if it ever would): no floats, no silent rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Rounded,
)

from monitor.domain.addresses import NATIVE_TOKEN
from monitor.domain.model import Token
from monitor.domain.snapshot import Snapshot
from monitor.risk.model import SpenderExposure

_EXACT = Context(
    prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, Rounded, InvalidOperation]
)
_ONE = Decimal(1)


def token_value_usd(units: int, decimals: int, price_usd: Decimal) -> Decimal:
    """``units`` base units of a token with ``decimals`` decimals at ``price_usd`` per whole
    token, exactly."""
    if units < 0 or decimals < 0:
        raise ValueError("units and decimals must not be negative")
    if not is_usable_price(price_usd):
        raise ValueError(f"not a usable price: {price_usd!r}")
    return _tidy(_EXACT.scaleb(_EXACT.multiply(Decimal(units), price_usd), Decimal(-decimals)))


def is_usable_price(price: Decimal) -> bool:
    """A finite, non-negative price (anything else is treated as unknown)."""
    return price.is_finite() and not price.is_signed()


def spender_exposures(
    snapshot: Snapshot,
    *,
    tokens: Mapping[tuple[int, str], Token],
    prices_usd: Mapping[tuple[int, str], Decimal],
) -> tuple[SpenderExposure, ...]:
    """One exposure per (chain, wallet, spender) with a non-zero allowance, in key order.

    A token whose amount at risk is non-zero but whose price or decimals are unknown is listed
    in ``missing_prices`` and left out of the sum; a zero amount is worth 0 at any price.
    """
    approved: dict[tuple[int, str, str], list[tuple[str, int]]] = {}
    for (chain_id, wallet, token, spender), allowance in sorted(snapshot.allowances.items()):
        if allowance <= 0 or is_native(chain_id, token, tokens):
            continue
        approved.setdefault((chain_id, wallet, spender), []).append((token, allowance))
    exposures = []
    for (chain_id, wallet, spender), items in approved.items():
        total = Decimal(0)
        priced = 0
        missing: list[str] = []
        for token, allowance in items:
            units = min(snapshot.balance((chain_id, wallet, token)), allowance)
            if units == 0:
                priced += 1
                continue
            meta = tokens.get((chain_id, token))
            decimals = meta.decimals if meta is not None else None
            price = prices_usd.get((chain_id, token))
            # A negative or NaN price is a bug upstream: unknown, like a missing one.
            if decimals is None or price is None or not is_usable_price(price):
                missing.append(token)
                continue
            total = _EXACT.add(total, token_value_usd(units, decimals, price))
            priced += 1
        exposures.append(
            SpenderExposure(
                chain_id=chain_id,
                wallet=wallet,
                spender=spender,
                at_risk_usd=_tidy(total),
                priced_tokens=priced,
                missing_prices=tuple(missing),
            )
        )
    return tuple(exposures)


def is_native(chain_id: int, token: str, tokens: Mapping[tuple[int, str], Token]) -> bool:
    """The chain's native coin, by address or by what 1inch said of the token."""
    if token == NATIVE_TOKEN:
        return True
    meta = tokens.get((chain_id, token))
    return meta is not None and meta.is_native


def _tidy(value: Decimal) -> Decimal:
    """``value`` without trailing fractional zeros, never in exponent notation for whole
    numbers (1000.000 -> 1000, not 1E+3). Exact."""
    reduced = _EXACT.normalize(value)
    exponent = reduced.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return _EXACT.quantize(reduced, _ONE)
    return reduced
