"""Wiring shared by the commands: who creates a resource closes it, here."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import aiohttp

from monitor import __version__
from monitor.chain.endpoints import ONEINCH_WEB3_ORIGIN, resolve_endpoint
from monitor.chain.rpc import ChainRpc, RpcEndpoint
from monitor.chain.source import ChainPositions
from monitor.config import ApiKey, Config
from monitor.config.secrets import is_oneinch_api
from monitor.errors import ConfigError
from monitor.oneinch import BalanceClient, RateLimiter
from monitor.oneinch.breaker import BREAKER_COOL_DOWN_S, HostBreaker, origin_of
from monitor.oneinch.client import RequestRecord, RetryPolicy
from monitor.ports import Clock, utc_now
from monitor.store import migrate
from monitor.store.discovery import SqlDiscoveryStore
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


def oneinch_usable(config: Config, api_key: ApiKey | None) -> bool:
    """Whether the 1inch APIs can answer: with a key, or against a host that needs none (the
    simulator). Without, the chain reader alone serves (key-free mode)."""
    return api_key is not None or not is_oneinch_api(config.api.base_url)


def chain_endpoints(
    config: Config, api_key: ApiKey | None, environ: Mapping[str, str] | None = None
) -> dict[int, RpcEndpoint | None]:
    """The JSON-RPC endpoint of every chain with discovery (None: nothing names one)."""
    env = os.environ if environ is None else environ
    credentials = env.get("CREDENTIALS_DIRECTORY")
    return {
        chain.id: resolve_endpoint(
            chain.id,
            configured_url=chain.rpc_url,
            configured_at=f"chains[{index}].rpc.url",
            environ=env,
            credentials_dir=Path(credentials) if credentials else None,
            oneinch_base_url=config.api.base_url,
            oneinch_key=api_key,
        )
        for index, chain in enumerate(config.chains)
        if chain.discovery is not None
    }


def open_chain(
    config: Config,
    api_key: ApiKey | None,
    client: BalanceClient,
    store: SqlSnapshotStore,
    *,
    clock: Clock = utc_now,
    on_request: Callable[[int, RequestRecord], None] | None = None,
) -> ChainPositions | None:
    """The chain reader over ``client``'s session, or None when no chain has discovery.
    ``on_request`` hears of every HTTP attempt to a chain's endpoint, with the chain's id.

    Each endpoint gets its own limiter at ``rpc.requests_per_second``, except 1inch's Web3
    RPC API, which shares the key's limiter with the Balance and Spot Price APIs. A chain
    with discovery but no endpoint is a ``ConfigError`` naming the ways to give one.
    """
    rpcs: dict[int, ChainRpc] = {}
    cool_down_s = min(BREAKER_COOL_DOWN_S, config.poll.interval_s)
    for chain_id, endpoint in chain_endpoints(config, api_key).items():
        if endpoint is None:
            raise ConfigError(
                f"chains[{_chain_index(config, chain_id)}].discovery",
                f"chain {chain_id} has no JSON-RPC endpoint: set chains[].rpc.url, the "
                f"environment variable EXPOSURE_MONITOR_RPC_URL_{chain_id}, the systemd "
                f"credential rpc_url_{chain_id}, or a 1inch API key (its Web3 RPC API)",
            )
        shared = endpoint.origin == ONEINCH_WEB3_ORIGIN
        rpc_settings = config.rpc
        rpcs[chain_id] = ChainRpc(
            client.session,
            endpoint,
            limiter=client.limiter if shared else RateLimiter(rpc_settings.requests_per_second),
            max_attempts=rpc_settings.max_attempts,
            timeout_s=rpc_settings.timeout_s,
            max_batch_size=rpc_settings.max_batch_size,
            backoff_initial_s=config.api.backoff_initial_s,
            backoff_max_s=config.api.backoff_max_s,
            retry_after_max_s=config.api.retry_after_max_s,
            breaker=client.breaker
            if shared
            else HostBreaker(endpoint.display, cool_down_s=cool_down_s),
            on_request=functools.partial(on_request, chain_id) if on_request else None,
        )
    if not rpcs:
        return None
    return ChainPositions(
        config,
        rpcs,
        SqlDiscoveryStore(store.engine, clock=clock),
        clock=clock,
        # Half the poll's time at most: the rest reads what was found, and 1inch's answers
        # are not lost to a first scan of a long history.
        scan_budget_s=config.poll.timeout_s / 2,
        # Under the poll's own timeout, so that a hanging node fails its chain's batches
        # before the whole poll (1inch's answers included) is abandoned.
        read_budget_s=config.poll.timeout_s * 0.8,
        known_tokens=store.tokens,
    )


def _chain_index(config: Config, chain_id: int) -> int:
    return next(i for i, c in enumerate(config.chains) if c.id == chain_id)
