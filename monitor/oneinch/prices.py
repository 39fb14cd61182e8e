"""``SpotPriceSource``: the ``PriceSource`` port over 1inch's Spot Price API.

It asks ``POST /price/v1.1/{chain}`` with ``currency: USD``, at most ``batch_size`` tokens per
request, and caches every answer per (chain, token) for ``ttl_s``, including "no price": a
token 1inch cannot price is not asked again at every poll. It never raises for upstream
failures: it logs them and answers from its cache, serving a price whose TTL has run out for
at most ``max_stale_s`` (an old price says more about value at risk than none). Nor does it
wait for the API longer than ``wait_s`` a call: an API that hangs, or whose retries and
``Retry-After`` pauses would take minutes, is a failure once that is spent, so that it never
holds up the recording of a poll. A token it cannot price is absent from the answer, never
zero. The port is in ``monitor.ports``, its
in-memory adapter in ``monitor.memory``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from monitor.errors import UpstreamError
from monitor.oneinch.client import BalanceClient
from monitor.risk.exposure import is_usable_price

log = logging.getLogger(__name__)

MAX_TOKENS_PER_REQUEST = 100


@dataclass(frozen=True, slots=True)
class _Cached:
    price: Decimal | None  # None: 1inch had no price for it
    fetched_at: float


class SpotPriceSource:
    """``PriceSource`` over the 1inch Spot Price API, with a per-token cache."""

    def __init__(
        self,
        client: BalanceClient,
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_stale_s: float = 86_400.0,
        batch_size: int = MAX_TOKENS_PER_REQUEST,
        wait_s: float = 20.0,
    ) -> None:
        if ttl_s < 0 or max_stale_s < 0:
            raise ValueError("ttl_s and max_stale_s must not be negative")
        if wait_s <= 0:
            raise ValueError("wait_s must be positive")
        if not 1 <= batch_size <= MAX_TOKENS_PER_REQUEST:
            raise ValueError(f"batch_size must be 1..{MAX_TOKENS_PER_REQUEST}")
        self._client = client
        self._ttl_s = ttl_s
        self._clock = clock
        self._max_stale_s = max_stale_s
        self._batch_size = batch_size
        self._wait_s = wait_s
        self._cache: dict[tuple[int, str], _Cached] = {}

    async def usd_prices(self, chain_id: int, tokens: Sequence[str]) -> dict[str, Decimal]:
        now = self._clock()
        self._forget_older_than(now - max(self._ttl_s, self._max_stale_s))
        found: dict[str, Decimal] = {}
        to_ask: list[str] = []
        for token in dict.fromkeys(t.lower() for t in tokens):
            cached = self._cache.get((chain_id, token))
            if cached is not None and now - cached.fetched_at < self._ttl_s:
                if cached.price is not None:
                    found[token] = cached.price
            else:
                to_ask.append(token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        for start in range(0, len(to_ask), self._batch_size):
            batch = to_ask[start : start + self._batch_size]
            found.update(await self._ask(chain_id, batch, deadline - loop.time()))
        return found

    async def _ask(self, chain_id: int, batch: list[str], wait_s: float) -> dict[str, Decimal]:
        try:
            if wait_s <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait_s):
                reply = await self._client.prices(chain_id, batch, currency="USD")
        except (UpstreamError, TimeoutError) as exc:
            problem = (
                f"no answer within {self._wait_s:g}s" if isinstance(exc, TimeoutError) else exc
            )
            stale = self._stale(chain_id, batch, self._clock())
            log.warning(
                "USD prices of %d tokens on chain %d unavailable (%s); using %d older prices",
                len(batch),
                chain_id,
                problem,
                len(stale),
            )
            return stale
        fetched_at = self._clock()
        found: dict[str, Decimal] = {}
        for token in batch:
            price = reply.value.get(token)
            if price is not None and not is_usable_price(price):
                price = None
            self._cache[(chain_id, token)] = _Cached(price=price, fetched_at=fetched_at)
            if price is not None:
                found[token] = price
        return found

    def _stale(self, chain_id: int, batch: list[str], now: float) -> dict[str, Decimal]:
        """Expired cached prices no older than ``max_stale_s``; the cache entries are left as
        they are, so the next call asks again."""
        stale: dict[str, Decimal] = {}
        for token in batch:
            cached = self._cache.get((chain_id, token))
            if cached is None or cached.price is None:
                continue
            if now - cached.fetched_at <= self._max_stale_s:
                stale[token] = cached.price
        return stale

    def _forget_older_than(self, cutoff: float) -> None:
        for key in [k for k, c in self._cache.items() if c.fetched_at < cutoff]:
            del self._cache[key]
