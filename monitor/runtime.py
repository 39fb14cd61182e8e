"""Wiring shared by the commands: who creates a resource closes it, here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp

from monitor import __version__
from monitor.config import ApiKey, Config
from monitor.oneinch import BalanceClient, RateLimiter
from monitor.oneinch.breaker import BREAKER_COOL_DOWN_S, HostBreaker, origin_of
from monitor.oneinch.client import RequestRecord, RetryPolicy
from monitor.store import migrate
from monitor.store.engine import create_engine
from monitor.store.snapshots import SqlSnapshotStore


@contextlib.asynccontextmanager
async def open_client(
    config: Config,
    api_key: ApiKey | None,
    *,
    on_request: Callable[[RequestRecord], None] | None = None,
    response_class: type[aiohttp.ClientResponse] = aiohttp.ClientResponse,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> AsyncIterator[BalanceClient]:
    """A client for ``config.api`` with its own session, rate limiter and host breaker.

    The breaker's cool-down is the poll interval when that is under 30 s, so that every
    scheduled poll tries a host that was refusing connections once again.

    ``response_class`` and ``trace_configs`` go to the session (the benchmarks observe the
    answers' bytes and the request starts through them).
    """
    api = config.api
    cool_down_s = min(BREAKER_COOL_DOWN_S, config.poll.interval_s)
    async with aiohttp.ClientSession(
        headers={"User-Agent": f"exposure-monitor/{__version__}"},
        response_class=response_class,
        trace_configs=list(trace_configs) or None,
    ) as session:
        yield BalanceClient(
            session,
            base_url=api.base_url,
            api_key=api_key,
            limiter=RateLimiter(api.requests_per_second),
            timeout_s=api.timeout_s,
            retry=RetryPolicy(
                max_attempts=api.max_attempts,
                backoff_initial_s=api.backoff_initial_s,
                backoff_max_s=api.backoff_max_s,
                retry_after_max_s=api.retry_after_max_s,
            ),
            on_request=on_request,
            breaker=HostBreaker(origin_of(api.base_url), cool_down_s=cool_down_s),
        )


@contextlib.asynccontextmanager
async def open_store(
    config: Config, *, migrate_schema: bool | None = None
) -> AsyncIterator[SqlSnapshotStore]:
    """The snapshot store of ``config.database``, migrated first when configured so."""
    engine = create_engine(config.database.url)
    try:
        if config.database.migrate_on_start if migrate_schema is None else migrate_schema:
            await migrate.upgrade(engine)
        yield SqlSnapshotStore(engine, unlimited_threshold=config.risk.unlimited_threshold)
    finally:
        await engine.dispose()
