"""Async client for the 1inch Balance API v1.2 and Spot Price API v1.1.

One client per API key. It is handed an ``aiohttp.ClientSession`` (which it never closes)
and a ``RateLimiter`` that every attempt, retries included, must pass. Failures become the
``UpstreamError`` subclasses of ``monitor.errors``; the key never appears in any of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar

import aiohttp

from monitor.config.secrets import ApiKey
from monitor.errors import BadResponse, RateLimited, Rejected, Unavailable, UpstreamError
from monitor.oneinch import parse
from monitor.oneinch.parse import AggregatedToken, BalanceAllowance
from monitor.oneinch.ratelimit import RateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply(Generic[T]):
    """A parsed answer and the ``X-Request-Id`` 1inch gave it."""

    value: T
    request_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One HTTP attempt, for metrics. ``code`` is the status, or ``timeout`` / ``error``."""

    endpoint: str
    code: str
    duration_s: float
    request_id: str | None
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter; ``Retry-After`` wins when 1inch sends it."""

    max_attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Delay after failed attempt ``attempt`` (1-based): half fixed, half random."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * float(2 ** (attempt - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class BalanceClient:
    """The eight Balance API endpoints and the Spot Price API, typed, amounts as ``int``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: ApiKey | None,
        limiter: RateLimiter,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        on_request: Callable[[RequestRecord], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry = retry or RetryPolicy()
        self._on_request = on_request
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    # -- Balance API v1.2 -------------------------------------------------------------------

    async def aggregated_balances_and_allowances(
        self, chain_id: int, spender: str, wallets: Sequence[str], *, filter_empty: bool = True
    ) -> Reply[tuple[AggregatedToken, ...]]:
        """Endpoint 1: balances and allowances of many wallets for one spender.

        Wallet keys of the answer that spell one of ``wallets`` come back as that very string
        when it is lowercase (see ``parse.parse_aggregated``), others lowercase.
        """
        if not wallets:
            raise ValueError("wallets must not be empty")
        params = {"wallets": ",".join(wallets), "filterEmpty": "true" if filter_empty else "false"}
        return await self._call(
            "aggregated",
            "GET",
            f"/balance/v1.2/{chain_id}/aggregatedBalancesAndAllowances/{spender}",
            lambda data: parse.parse_aggregated(data, chain_id=chain_id, wallets=wallets),
            params=params,
        )

    async def balances(self, chain_id: int, wallet: str) -> Reply[dict[str, int]]:
        """Endpoint 2: balances of 1inch's token list (zeros included)."""
        return await self._call(
            "balances", "GET", f"/balance/v1.2/{chain_id}/balances/{wallet}", parse.parse_amount_map
        )

    async def custom_balances(
        self, chain_id: int, wallet: str, tokens: Sequence[str]
    ) -> Reply[dict[str, int]]:
        """Endpoint 3: balances of the given tokens."""
        return await self._call(
            "custom_balances",
            "POST",
            f"/balance/v1.2/{chain_id}/balances/{wallet}",
            parse.parse_amount_map,
            body={"tokens": list(tokens)},
        )

    async def balances_of_wallets(
        self, chain_id: int, wallets: Sequence[str], tokens: Sequence[str]
    ) -> Reply[dict[str, dict[str, int]]]:
        """Endpoint 4: balances of the given tokens for many wallets."""
        return await self._call(
            "balances_multiple",
            "POST",
            f"/balance/v1.2/{chain_id}/balances/multiple/walletsAndTokens",
            parse.parse_wallet_amount_maps,
            body={"tokens": list(tokens), "wallets": list(wallets)},
        )

    async def allowances_and_balances(
        self, chain_id: int, spender: str, wallet: str
    ) -> Reply[dict[str, BalanceAllowance]]:
        """Endpoint 5: balances and allowances of 1inch's token list for one spender."""
        return await self._call(
            "allowances_and_balances",
            "GET",
            f"/balance/v1.2/{chain_id}/allowancesAndBalances/{spender}/{wallet}",
            parse.parse_balance_allowance_map,
        )

    async def custom_allowances_and_balances(
        self, chain_id: int, spender: str, wallet: str, tokens: Sequence[str]
    ) -> Reply[dict[str, BalanceAllowance]]:
        """Endpoint 6: balances and allowances of the given tokens for one spender."""
        return await self._call(
            "custom_allowances_and_balances",
            "POST",
            f"/balance/v1.2/{chain_id}/allowancesAndBalances/{spender}/{wallet}",
            parse.parse_balance_allowance_map,
            body={"tokens": list(tokens)},
        )

    async def allowances(self, chain_id: int, spender: str, wallet: str) -> Reply[dict[str, int]]:
        """Endpoint 7: allowances of 1inch's token list for one spender."""
        return await self._call(
            "allowances",
            "GET",
            f"/balance/v1.2/{chain_id}/allowances/{spender}/{wallet}",
            parse.parse_amount_map,
        )

    async def custom_allowances(
        self, chain_id: int, spender: str, wallet: str, tokens: Sequence[str]
    ) -> Reply[dict[str, int]]:
        """Endpoint 8: allowances of the given tokens for one spender."""
        return await self._call(
            "custom_allowances",
            "POST",
            f"/balance/v1.2/{chain_id}/allowances/{spender}/{wallet}",
            parse.parse_amount_map,
            body={"tokens": list(tokens)},
        )

    # -- Spot Price API v1.1 ----------------------------------------------------------------

    async def whitelisted_prices(
        self, chain_id: int, *, currency: str | None = None
    ) -> Reply[dict[str, Decimal]]:
        """Prices of 1inch's whitelisted tokens: native wei per token, or ``currency``."""
        params = {"currency": currency} if currency else None
        return await self._call(
            "price", "GET", f"/price/v1.1/{chain_id}", parse.parse_prices, params=params
        )

    async def prices(
        self, chain_id: int, tokens: Sequence[str], *, currency: str | None = None
    ) -> Reply[dict[str, Decimal]]:
        """Prices of the given tokens (POST, so long lists fit). Unknown tokens are absent."""
        body: dict[str, object] = {"tokens": list(tokens)}
        if currency:
            body["currency"] = currency
        return await self._call(
            "price", "POST", f"/price/v1.1/{chain_id}", parse.parse_prices, body=body
        )

    async def prices_by_address(
        self, chain_id: int, tokens: Sequence[str], *, currency: str | None = None
    ) -> Reply[dict[str, Decimal]]:
        """Prices of the given tokens through the GET route (addresses in the path)."""
        if not tokens:
            raise ValueError("tokens must not be empty")
        params = {"currency": currency} if currency else None
        return await self._call(
            "price",
            "GET",
            f"/price/v1.1/{chain_id}/{','.join(tokens)}",
            parse.parse_prices,
            params=params,
        )

    async def currencies(self, chain_id: int) -> Reply[tuple[str, ...]]:
        """Currency codes the Spot Price API converts to."""
        return await self._call(
            "currencies", "GET", f"/price/v1.1/{chain_id}/currencies", parse.parse_currencies
        )

    # -- transport --------------------------------------------------------------------------

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        parser: Callable[[object], T],
        *,
        params: dict[str, str] | None = None,
        body: object = None,
    ) -> Reply[T]:
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        url = self._base_url + path
        attempt = 0
        while True:
            attempt += 1
            await self._limiter.acquire()
            try:
                status, request_id, payload, retry_after = await self._attempt(
                    endpoint, method, url, headers, params, body, attempt
                )
            except UpstreamError as exc:  # timeouts and connection failures
                error: UpstreamError = exc
                delay = self._retry.backoff_s(attempt, self._rng)
            else:
                if 200 <= status < 300:
                    return self._parsed(endpoint, parser, payload, request_id, status, attempt)
                error = self._status_error(endpoint, status, request_id, payload, attempt)
                if isinstance(error, Rejected | BadResponse):
                    self._log_failure(error, final=True)
                    raise error
                delay = self._retry.backoff_s(attempt, self._rng)
                if retry_after is not None:
                    if retry_after > self._retry.retry_after_max_s:
                        self._log_failure(error, final=True)
                        raise type(error)(
                            f"{error.problem}; Retry-After {retry_after:g}s exceeds "
                            f"retry_after_max_s {self._retry.retry_after_max_s:g}s",
                            endpoint=endpoint,
                            status=status,
                            request_id=request_id,
                            attempts=attempt,
                        ) from None
                    delay = retry_after
            if attempt >= self._retry.max_attempts:
                self._log_failure(error, final=True)
                raise error
            self._log_failure(error, final=False, delay_s=delay)
            await self._sleep(delay)

    async def _attempt(
        self,
        endpoint: str,
        method: str,
        url: str,
        headers: dict[str, str],
        params: dict[str, str] | None,
        body: object,
        attempt: int,
    ) -> tuple[int, str | None, bytes, float | None]:
        started = time.monotonic()
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                json=body if method == "POST" else None,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                request_id = response.headers.get("X-Request-Id")
                retry_after = _retry_after_s(response.headers.get("Retry-After"))
                status = response.status
        except TimeoutError:
            self._record(endpoint, "timeout", started, None, attempt)
            raise Unavailable(
                f"no answer within {self._timeout.total:g}s", endpoint=endpoint, attempts=attempt
            ) from None
        except aiohttp.ClientError as exc:
            self._record(endpoint, "error", started, None, attempt)
            raise Unavailable(
                f"connection failed: {type(exc).__name__}", endpoint=endpoint, attempts=attempt
            ) from None
        self._record(endpoint, str(status), started, request_id, attempt)
        return status, request_id, payload, retry_after

    def _parsed(
        self,
        endpoint: str,
        parser: Callable[[object], T],
        payload: bytes,
        request_id: str | None,
        status: int,
        attempt: int,
    ) -> Reply[T]:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            error = BadResponse(
                f"body is not JSON ({len(payload)} bytes)",
                endpoint=endpoint,
                status=status,
                request_id=request_id,
                attempts=attempt,
            )
            self._log_failure(error, final=True)
            raise error from None
        try:
            value = parser(data)
        except ValueError as exc:
            error = BadResponse(
                self._redact(f"unexpected answer: {exc}"),
                endpoint=endpoint,
                status=status,
                request_id=request_id,
                attempts=attempt,
            )
            self._log_failure(error, final=True)
            raise error from None
        return Reply(value=value, request_id=request_id)

    def _status_error(
        self, endpoint: str, status: int, request_id: str | None, payload: bytes, attempt: int
    ) -> UpstreamError:
        detail = _error_detail(payload)
        kind: type[UpstreamError]
        if status == 429:
            problem, kind = "rate limited", RateLimited
        elif status >= 500:
            problem, kind = "server error", Unavailable
        elif status == 401:
            problem, kind = "API key missing or refused", Rejected
        elif status == 403:
            problem, kind = "access forbidden", Rejected
        elif 400 <= status < 500:
            # 400 and 404 included: the same request would be refused again, never retry.
            problem, kind = "request refused", Rejected
        else:
            problem, kind = "unexpected status", BadResponse
        if detail:
            problem = f"{problem}: {self._redact(detail)}"
        return kind(
            problem, endpoint=endpoint, status=status, request_id=request_id, attempts=attempt
        )

    def _redact(self, text: str) -> str:
        if self._api_key is not None:
            text = text.replace(self._api_key.reveal(), "***")
        return text

    def _record(
        self, endpoint: str, code: str, started: float, request_id: str | None, attempt: int
    ) -> None:
        if self._on_request is not None:
            self._on_request(
                RequestRecord(
                    endpoint=endpoint,
                    code=code,
                    duration_s=time.monotonic() - started,
                    request_id=request_id,
                    attempt=attempt,
                )
            )

    @staticmethod
    def _log_failure(error: UpstreamError, *, final: bool, delay_s: float | None = None) -> None:
        if final:
            log.warning("1inch request failed: %s", error)
        else:
            log.info("1inch request failed, retrying in %.1fs: %s", delay_s or 0.0, error)


def _error_detail(payload: bytes) -> str | None:
    """One printable line from an error body, JSON or not, at most 200 characters."""
    try:
        detail = parse.describe_error_body(json.loads(payload))
    except (ValueError, UnicodeDecodeError):
        text = payload[:200].decode("utf-8", "replace")
        detail = "non-JSON body" if "<" in text or not text.strip() else text
    if detail is None:
        return None
    line = "".join(ch if ch.isprintable() else " " for ch in detail).strip()
    return line[:200]


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
