"""Async client for the 1inch Balance API v1.2 and Spot Price API v1.1.

One client per API key. It is handed an ``aiohttp.ClientSession`` (which it never closes)
and a ``RateLimiter`` that every attempt, retries included, must pass; a ``Retry-After`` pauses
that limiter, so every request made with the key waits, not only the one that got it. A
``HostBreaker`` (``monitor.oneinch.breaker``) fails requests at once while the host keeps
refusing connections. Failures become the ``UpstreamError`` subclasses of ``monitor.errors``;
each names the host (``scheme://host:port``) and none ever contains the key.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Generic, TypeVar, cast

import aiohttp

from monitor.config.secrets import ApiKey
from monitor.errors import BadResponse, RateLimited, Rejected, Unavailable, UpstreamError
from monitor.oneinch import parse
from monitor.oneinch.breaker import HostBreaker, connection_failure_cause, origin_of
from monitor.oneinch.parse import AggregatedToken, BalanceAllowance
from monitor.oneinch.ratelimit import PausedTooLong, RateLimiter

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_AFTER_CEILING_S = 86_400.0
"""The longest a single ``Retry-After`` holds the key's requests, whatever it says: an absurd
value (a typo, a hostile proxy) must not stop monitoring until a restart."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply(Generic[T]):
    """A parsed answer and the ``X-Request-Id`` 1inch gave it."""

    value: T
    request_id: str | None
    digest: bytes | None = None
    """From ``aggregated_if_changed``: a digest of the answer's bytes (the same bytes, the
    same digest), which tells a repeated answer without holding it."""


def answer_digest(payload: bytes) -> bytes:
    """BLAKE2b-128 of an answer's bytes: what tells a repeated answer."""
    return hashlib.blake2b(payload, digest_size=16).digest()


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
    """Bounded exponential backoff with jitter; ``Retry-After`` wins when 1inch sends it.

    A ``Retry-After`` pauses the rate limiter (every request with the key) for that long; one
    over ``retry_after_max_s`` fails the request at once, and so every request that would
    have to wait for it, instead of waiting.
    """

    max_attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Delay after failed attempt ``attempt`` (1-based): half fixed, half random."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * float(2 ** (attempt - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class _ConnectionFailed(Exception):
    """An attempt that never reached the host (refused, DNS): the breaker counts these."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(cause)


class BalanceClient:
    """The eight Balance API endpoints and the Spot Price API, typed, amounts as ``int``.

    ``breaker`` defaults to a ``HostBreaker`` for ``base_url``'s host with its defaults.
    """

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
        breaker: HostBreaker | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.origin = origin_of(self._base_url)
        """``scheme://host:port`` of the API, as every error names it."""
        self._breaker = breaker or HostBreaker(self.origin)
        self._api_key = api_key
        self._limiter = limiter
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry = retry or RetryPolicy()
        self._on_request = on_request
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session (the chain reader shares it; neither closes it)."""
        return self._session

    @property
    def breaker(self) -> HostBreaker:
        """The host's breaker: 1inch's Web3 RPC API is the same host, so it shares it."""
        return self._breaker

    @property
    def limiter(self) -> RateLimiter:
        """The API key's limiter: 1inch's Web3 RPC API counts against the same key."""
        return self._limiter

    # -- Balance API v1.2 -------------------------------------------------------------------

    async def aggregated_balances_and_allowances(
        self,
        chain_id: int,
        spender: str,
        wallets: Sequence[str],
        *,
        filter_empty: bool = True,
    ) -> Reply[tuple[AggregatedToken, ...]]:
        """Endpoint 1: balances and allowances of many wallets for one spender.

        Wallet keys of the answer that spell one of ``wallets`` come back as that very string
        when it is lowercase (see ``parse.parse_aggregated``), others lowercase.
        """
        reply = await self._aggregated(chain_id, spender, wallets, filter_empty, digesting=False)
        assert reply.value is not None  # not digesting: always parsed
        return cast(Reply[tuple[AggregatedToken, ...]], reply)

    async def aggregated_if_changed(
        self,
        chain_id: int,
        spender: str,
        wallets: Sequence[str],
        *,
        filter_empty: bool = True,
        last_digest: bytes | None,
    ) -> Reply[tuple[AggregatedToken, ...] | None]:
        """Endpoint 1 as ``aggregated_balances_and_allowances``, with the answer's digest in
        ``Reply.digest``; when it is ``last_digest`` (byte for byte the answer whose digest
        that was), the answer is not parsed and the value is None. An unchanged portfolio's
        poll is mostly such answers: parsing them again was most of its CPU."""
        return await self._aggregated(
            chain_id, spender, wallets, filter_empty, digesting=True, unless=last_digest
        )

    async def _aggregated(
        self,
        chain_id: int,
        spender: str,
        wallets: Sequence[str],
        filter_empty: bool,
        *,
        digesting: bool,
        unless: bytes | None = None,
    ) -> Reply[tuple[AggregatedToken, ...] | None]:
        if not wallets:
            raise ValueError("wallets must not be empty")
        params = {"wallets": ",".join(wallets), "filterEmpty": "true" if filter_empty else "false"}
        path = f"/balance/v1.2/{chain_id}/aggregatedBalancesAndAllowances/{spender}"
        return await self._call(
            "aggregated",
            "GET",
            path,
            lambda data: parse.parse_aggregated(data, chain_id=chain_id, wallets=wallets),
            params=params,
            digesting=digesting,
            unless_digest=unless,
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
        digesting: bool = False,
        unless_digest: bytes | None = None,
    ) -> Reply[T]:
        """``digesting``: the answer's digest in ``Reply.digest``, and no parse (a None
        value) when it is ``unless_digest``."""
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
        url = self._base_url + path
        breaker = self._breaker
        attempt = 0
        while True:
            attempt += 1
            paused_s = 0.0
            await self._start(endpoint, attempt)
            try:
                status, request_id, payload, retry_after = await self._attempt(
                    endpoint, method, url, headers, params, body, attempt
                )
            except _ConnectionFailed as exc:
                breaker.failed(exc.cause)
                if breaker.is_open():
                    raise breaker.error(endpoint=endpoint, attempts=attempt) from None
                error: UpstreamError = Unavailable(
                    f"connection failed to {self.origin}: {exc.cause}",
                    endpoint=endpoint,
                    attempts=attempt,
                )
                delay = self._retry.backoff_s(attempt, self._rng)
            except UpstreamError as exc:  # timeouts and other transport failures
                error = exc
                delay = self._retry.backoff_s(attempt, self._rng)
            else:
                breaker.answered()
                if 200 <= status < 300:
                    if not digesting:
                        return self._parsed(endpoint, parser, payload, request_id, status, attempt)
                    digest = answer_digest(payload)
                    if digest == unless_digest:
                        # The caller holds what these very bytes made: nothing to parse.
                        return Reply(value=cast(T, None), request_id=request_id, digest=digest)
                    reply = self._parsed(endpoint, parser, payload, request_id, status, attempt)
                    return replace(reply, digest=digest)
                error = self._status_error(endpoint, status, request_id, payload, attempt)
                if isinstance(error, Rejected | BadResponse):
                    self._log_failure(error, final=True)
                    raise error
                delay = self._retry.backoff_s(attempt, self._rng)
                if retry_after is not None:
                    # The key's limit, not this request's: every request waits it out.
                    self._limiter.pause(min(retry_after, RETRY_AFTER_CEILING_S))
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
                    # The limiter holds the retry (and every other request) until then.
                    paused_s, delay = retry_after, 0.0
            if attempt >= self._retry.max_attempts:
                self._log_failure(error, final=True)
                raise error
            self._log_failure(error, final=False, delay_s=paused_s or delay)
            if delay > 0:
                await self._unless_breaker_opens(
                    functools.partial(self._sleep, delay), endpoint, attempt
                )

    async def _start(self, endpoint: str, attempt: int) -> None:
        """Wait for the rate limiter's go, or fail at once: the host's breaker is open, or a
        pause (``Retry-After``) would last longer than ``retry_after_max_s``."""
        breaker = self._breaker
        if breaker.is_open():
            raise breaker.error(endpoint=endpoint, attempts=attempt - 1)
        max_pause_s = self._retry.retry_after_max_s
        try:
            await self._unless_breaker_opens(
                functools.partial(self._limiter.acquire, max_pause_s=max_pause_s),
                endpoint,
                attempt,
            )
        except PausedTooLong as exc:
            raise RateLimited(
                f"rate limited: the key is paused by a Retry-After for another "
                f"{exc.remaining_s:.0f}s, more than retry_after_max_s {max_pause_s:g}s "
                f"({self.origin})",
                endpoint=endpoint,
                attempts=attempt - 1,
            ) from None
        if breaker.is_open():
            raise breaker.error(endpoint=endpoint, attempts=attempt - 1)

    async def _unless_breaker_opens(
        self, wait: Callable[[], Awaitable[None]], endpoint: str, attempt: int
    ) -> None:
        """Await ``wait()`` (a limiter slot, a backoff), but end it and fail at once should the
        host's breaker open meanwhile: a dead host must not cost every queued request its
        turn. With no connection failure since the last answer, ``wait()`` is simply awaited
        (the healthy path pays nothing); the breaker is checked again after it all the same."""
        breaker = self._breaker
        if not breaker.suspect:
            await wait()
            return
        if breaker.is_open():  # (also clears ``opened`` once the cool-down has passed)
            raise breaker.error(endpoint=endpoint, attempts=attempt - 1)
        waiting = asyncio.ensure_future(wait())
        opened = asyncio.ensure_future(breaker.opened.wait())
        try:
            await asyncio.wait((waiting, opened), return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait((waiting,))
        if waiting.cancelled():
            raise breaker.error(endpoint=endpoint, attempts=attempt - 1)
        waiting.result()

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
                f"no answer within {self._timeout.total:g}s from {self.origin}",
                endpoint=endpoint,
                attempts=attempt,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            self._record(endpoint, "error", started, None, attempt)
            raise _ConnectionFailed(connection_failure_cause(exc)) from None
        except aiohttp.ClientError as exc:
            self._record(endpoint, "error", started, None, attempt)
            raise Unavailable(
                f"connection failed to {self.origin}: {type(exc).__name__}",
                endpoint=endpoint,
                attempts=attempt,
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
            value = parse.parse_body(payload, parser)
        except parse.NotJson:
            error = BadResponse(
                f"body is not JSON ({len(payload)} bytes, {self.origin})",
                endpoint=endpoint,
                status=status,
                request_id=request_id,
                attempts=attempt,
            )
            self._log_failure(error, final=True)
            raise error from None
        except ValueError as exc:
            error = BadResponse(
                self._redact(f"unexpected answer: {exc} ({self.origin})"),
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
        problem = f"{problem} ({self.origin})"
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
        seconds = float(value)  # a long enough string of digits is inf: not a usable delay
        return seconds if seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
