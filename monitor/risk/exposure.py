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
    approved: dict[tuple[int, str, str], dict[str, int]] = {}
    for (chain_id, wallet, token, spender), allowance in snapshot.allowances.items():
        if allowance <= 0 or is_native(chain_id, token, tokens):
            continue
        approved.setdefault((chain_id, wallet, spender), {})[token] = allowance
    valuations = token_valuations(tokens, prices_usd)
    return tuple(
        group_exposure(group, approved[group], snapshot.balances, valuations)
        for group in sorted(approved)
    )


Valuations = Mapping[tuple[int, str], tuple[Decimal, Decimal]]
"""(chain_id, token) -> (USD price per whole token, -decimals), for the tokens that have both."""


def token_valuations(
    tokens: Mapping[tuple[int, str], Token], prices_usd: Mapping[tuple[int, str], Decimal]
) -> dict[tuple[int, str], tuple[Decimal, Decimal]]:
    """The tokens whose value can be computed: a usable price and known decimals."""
    valuations = {}
    for key, price in prices_usd.items():
        meta = tokens.get(key)
        # A negative or NaN price is a bug upstream: unknown, like a missing one.
        if meta is not None and meta.decimals is not None and is_usable_price(price):
            valuations[key] = (price, Decimal(-meta.decimals))
    return valuations


def group_exposure(
    group: tuple[int, str, str],
    approved: Mapping[str, int],
    balances: Mapping[tuple[int, str, str], int],
    valuations: Valuations,
) -> SpenderExposure:
    """The exposure of one (chain, wallet, spender) given its approved tokens' allowances
    (token -> non-zero allowance, native coin excluded)."""
    chain_id, wallet, spender = group
    total = Decimal(0)
    priced = 0
    missing: list[str] = []
    for token in sorted(approved):
        units = min(balances.get((chain_id, wallet, token), 0), approved[token])
        if units == 0:
            priced += 1
            continue
        valuation = valuations.get((chain_id, token))
        if valuation is None:
            missing.append(token)
            continue
        price, exponent = valuation
        # Exact in _EXACT (it traps on any rounding), so the sum is tidied once, at the end.
        total = _EXACT.add(total, _EXACT.scaleb(_EXACT.multiply(Decimal(units), price), exponent))
        priced += 1
    return SpenderExposure(
        chain_id=chain_id,
        wallet=wallet,
        spender=spender,
        at_risk_usd=_tidy(total),
        priced_tokens=priced,
        missing_prices=tuple(missing),
    )


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
