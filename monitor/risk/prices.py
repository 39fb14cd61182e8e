"""Where USD prices come from: the ``PriceSource`` port and its in-memory adapter.

The real adapter, over 1inch's Spot Price API, is ``monitor.oneinch.prices.SpotPriceSource``.
``StaticPriceSource`` answers from fixed prices, for tests and dry runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Protocol


class PriceSource(Protocol):
    """USD prices of tokens, per whole token."""

    async def usd_prices(self, chain_id: int, tokens: Sequence[str]) -> dict[str, Decimal]:
        """Prices of those ``tokens`` (any address case) that have one, keyed by lowercase
        address. A token without a known price is absent. Never raises for upstream
        failures."""
        ...


class StaticPriceSource:
    """Fixed prices by (chain_id, lowercase token): the in-memory ``PriceSource``."""

    def __init__(self, prices: Mapping[tuple[int, str], Decimal]) -> None:
        self._prices = {(chain_id, token.lower()): p for (chain_id, token), p in prices.items()}

    async def usd_prices(self, chain_id: int, tokens: Sequence[str]) -> dict[str, Decimal]:
        found: dict[str, Decimal] = {}
        for token in tokens:
            price = self._prices.get((chain_id, token.lower()))
            if price is not None:
                found[token.lower()] = price
        return found
