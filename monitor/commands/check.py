"""``check``: will this config work? Validated offline, and with ``--online`` against 1inch.

Offline, beyond what ``load_config`` refuses, a config is an error (exit 2) when it points at
the real 1inch API without a key, when the key has the wrong form, or when a poll's requests
cannot pass the rate limit within ``poll.timeout_s``. Each message names the keys to change
and shows the arithmetic. Price requests follow the poll, outside its timeout, and their
number depends on what is at risk: they only warn, when one per chain would push a poll
cycle past ``poll.interval_s``. On success it says where the key comes from (never the key),
what it watches and what a poll costs.

``--online`` makes one cheap request per upstream (the Balance API; the Spot Price API when
prices are enabled), one attempt each, and reports reachability, whether the key was accepted
and the latency; any failure exits 3.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from monitor.config import ApiKey, Config, load_config
from monitor.config.secrets import CREDENTIAL_NAME, ENV_VAR, is_oneinch_api, load_api_key
from monitor.domain.addresses import to_checksum
from monitor.domain.chains import SUPPORTED_CHAINS
from monitor.errors import ConfigError, UpstreamError

if TYPE_CHECKING:
    import aiohttp

    from monitor.chain.rpc import RpcEndpoint
    from monitor.oneinch.client import RequestRecord

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_UPSTREAM = 3

NATIVE_COIN = "0xeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
PRICE_TOKENS_PER_REQUEST = 100  # monitor.oneinch.prices.MAX_TOKENS_PER_REQUEST
PROBE_TIMEOUT_S = 10.0
"""``--online`` waits at most this long for an answer (or ``api.timeout_s`` if shorter)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestBudget:
    """The requests one poll makes, counted as ``monitor.poller.poll_once`` makes them."""

    aggregated: int
    """One per (chain, spender, batch of up to ``api.max_wallets_per_request`` wallets)."""
    custom: int
    """One per (wallet, spender) on each chain with ``custom_tokens``."""
    price_chains: int
    """Chains whose tokens at risk are priced after the poll (0 when prices are disabled):
    one request per chain and 100 tokens at risk without a cached price. Not counted in
    ``poll``: how many depends on the data, and they are not bound by ``poll.timeout_s``."""

    @property
    def poll(self) -> int:
        return self.aggregated + self.custom


def request_budget(config: Config, *, oneinch: bool = True) -> RequestBudget:
    """Count the 1inch requests of one poll of ``config`` (retries not included); none in
    key-free mode (``oneinch`` False)."""
    aggregated = custom = chains = 0
    if not oneinch:
        return RequestBudget(aggregated=0, custom=0, price_chains=0)
    for chain in config.chains:
        wallets = len(config.wallets_on(chain.id))
        if not wallets:
            continue
        chains += 1
        batches = math.ceil(wallets / config.api.max_wallets_per_request)
        aggregated += len(chain.spenders) * batches
        if chain.custom_tokens:
            custom += len(chain.spenders) * wallets
    price_chains = chains if config.risk.prices.enabled else 0
    return RequestBudget(aggregated=aggregated, custom=custom, price_chains=price_chains)


def minimum_duration_s(requests: int, requests_per_second: float) -> float:
    """The least time ``requests`` take through a limiter of ``requests_per_second``: each
    one holds a 1/R-second slot of the key's rate."""
    return requests / requests_per_second


def budget_problems(config: Config, budget: RequestBudget) -> list[str]:
    """Why a poll of ``config`` cannot finish in time at its rate, each naming the keys."""
    api, poll = config.api, config.poll
    rate = api.requests_per_second
    needed_s = minimum_duration_s(budget.poll, rate)
    cure = _cure(config)
    problems = []
    if needed_s >= poll.timeout_s:
        problems.append(
            f"a poll makes {_requests_breakdown(config, budget)}; at api.requests_per_second "
            f"{rate:g} that takes at least {_seconds(needed_s)} s: it cannot finish within "
            f"poll.timeout_s {poll.timeout_s:g} {_timeout_origin(config)}: {cure}"
        )
    return problems


def budget_notes(config: Config, budget: RequestBudget) -> list[str]:
    """Warnings that do not make the config unworkable: price requests that, when every
    polled chain has something at risk, push a poll cycle past ``poll.interval_s``."""
    rate, interval_s = config.api.requests_per_second, config.poll.interval_s
    cycle_s = minimum_duration_s(budget.poll + budget.price_chains, rate)
    if not budget.price_chains or cycle_s < interval_s:
        return []
    return [
        f"with a price request for each of its {_count(budget.price_chains, 'chain')} "
        f"(risk.prices.enabled), a poll cycle takes at least {_seconds(cycle_s)} s at "
        f"api.requests_per_second {rate:g}, not less than poll.interval_s {interval_s:g}: "
        "polls will start late whenever prices are due"
    ]


def _requests_breakdown(config: Config, budget: RequestBudget) -> str:
    """``240 requests (200 aggregated: ...; 40 for custom tokens: ...)``."""
    parts = [
        f"{budget.aggregated} aggregated: one per chain, spender and batch of up to "
        f"api.max_wallets_per_request {config.api.max_wallets_per_request} wallets"
    ]
    if budget.custom:
        parts.append(f"{budget.custom} for custom tokens: one per wallet and spender")
    return f"{_count(budget.poll, 'request')} ({'; '.join(parts)})"


def _timeout_is_default(config: Config) -> bool:
    return config.poll.timeout_s == round(config.poll.interval_s * 0.8, 3)


def _timeout_origin(config: Config) -> str:
    interval_s = config.poll.interval_s
    if _timeout_is_default(config):
        return f"(0.8 of poll.interval_s {interval_s:g})"
    return f"(poll.interval_s {interval_s:g})"


def _cure(config: Config) -> str:
    if _timeout_is_default(config):
        cures = ["raise api.requests_per_second (if your plan allows) or poll.interval_s"]
    else:
        cures = [
            "raise api.requests_per_second (if your plan allows) or poll.timeout_s "
            "(and poll.interval_s, its ceiling)"
        ]
    if any(
        len(config.wallets_on(c.id)) > config.api.max_wallets_per_request for c in config.chains
    ):
        cures.append("raise api.max_wallets_per_request")
    cures.append("or watch fewer spenders")
    if any(c.custom_tokens for c in config.chains):
        cures[-1] += " or custom tokens"
    return ", ".join(cures)


def _seconds(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _host(base_url: str) -> str:
    return urlsplit(base_url).netloc


def key_problem(config: Config, key: ApiKey | None) -> str | None:
    """The real 1inch API with no key, for a chain that only 1inch would watch (one without
    discovery): nothing would ever be answered there. With discovery on every chain, no key
    is key-free mode: the chain reader alone serves."""
    if key is not None or not is_oneinch_api(config.api.base_url):
        return None
    only_1inch = [c.id for c in config.chains if c.discovery is None]
    if not only_1inch:
        return None
    chains = ", ".join(str(c) for c in only_1inch)
    return (
        f"api.base_url {config.api.base_url} is the real 1inch API, which answers nothing "
        f"without a key, and none is set, while chain {chains} has no discovery: set the "
        f"environment variable {ENV_VAR} or the systemd credential {CREDENTIAL_NAME} "
        "(LoadCredential=), turn on chains[].discovery with a JSON-RPC endpoint (key-free "
        "mode), or point api.base_url at a simulator"
    )


def endpoint_problems(
    config: Config, key: ApiKey | None, env: Mapping[str, str]
) -> tuple[list[str], dict[int, RpcEndpoint]]:
    """Every chain with discovery needs a JSON-RPC endpoint; the problems, and the
    endpoints found (shown as ``scheme://host`` only)."""
    from monitor.runtime import chain_endpoints

    try:
        found = chain_endpoints(config, key, env)
    except ConfigError as exc:
        return [str(exc)], {}
    problems = [
        f"chains[{_chain_index(config, chain_id)}].discovery: chain {chain_id} has no "
        f"JSON-RPC endpoint: set chains[].rpc.url, the environment variable "
        f"EXPOSURE_MONITOR_RPC_URL_{chain_id}, the systemd credential rpc_url_{chain_id}, "
        "or a 1inch API key (its Web3 RPC API)"
        for chain_id, endpoint in found.items()
        if endpoint is None
    ]
    return problems, {c: e for c, e in found.items() if e is not None}


def source_problems(
    config: Config, key: ApiKey | None, env: Mapping[str, str] | None = None
) -> list[str]:
    """Why a poll of ``config`` would leave something unwatched without saying so: a chain
    only 1inch watches with no key for the real API, a chain with discovery and no
    endpoint. ``once`` and ``run`` refuse to start on these (exit 2), as ``check`` does."""
    problems = [p for p in (key_problem(config, key),) if p]
    if config.discovery_chains:  # the chain reader (aiohttp and all) only when it is used
        problems += endpoint_problems(config, key, os.environ if env is None else env)[0]
    return problems


def _chain_index(config: Config, chain_id: int) -> int:
    return next(i for i, c in enumerate(config.chains) if c.id == chain_id)


def describe_key(config: Config, key: ApiKey | None) -> str:
    """Where the key comes from, never the key."""
    if key is None and is_oneinch_api(config.api.base_url):
        return "no key: 1inch is not asked (key-free mode)"
    if key is None:
        return f"no key (not needed for {_host(config.api.base_url)})"
    return key.source


def run_check(
    path: Path,
    *,
    online: bool,
    out: TextIO,
    err: TextIO,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``exposure-monitor check``: 0 when the config can work, 2 when it cannot (each
    problem on its own line of ``err``), 3 when ``online`` finds an upstream unreachable or
    refusing the key. ``environ`` (default ``os.environ``) is where the key is looked up."""
    env = os.environ if environ is None else environ
    try:
        config = load_config(path)
    except ConfigError as exc:
        return _config_errors([str(exc)], err)
    problems: list[str] = []
    key: ApiKey | None = None
    try:
        key = load_api_key(env, base_url=config.api.base_url)
    except ConfigError as exc:
        problems.append(str(exc))
    else:
        missing = key_problem(config, key)
        if missing:
            problems.append(missing)
    rpc_problems, endpoints = endpoint_problems(config, key, env)
    problems += rpc_problems
    # Key-free mode (no key, discovery everywhere) asks 1inch nothing; otherwise count 1inch's
    # requests even when the key is missing, so that every problem is reported at once.
    key_free = key is None and is_oneinch_api(config.api.base_url) and not key_problem(config, key)
    budget = request_budget(config, oneinch=not key_free)
    problems += budget_problems(config, budget)
    if problems:
        return _config_errors(problems, err)
    _write_summary(path, config, key, budget, out, endpoints)
    for note in budget_notes(config, budget):
        err.write(f"exposure-monitor: warning: {note}\n")
    if not online:
        return EXIT_OK
    reports = asyncio.run(probe_upstreams(config, key, env))
    out.write("online:\n")
    for report in reports:
        out.write(f"  {report.line()}\n")
    failed = [r for r in reports if not r.ok]
    for report in failed:
        err.write(f"exposure-monitor: upstream error: {report.api} at {report.host}: ")
        err.write(f"{report.outcome()}\n")
    return EXIT_UPSTREAM if failed else EXIT_OK


def _config_errors(problems: list[str], err: TextIO) -> int:
    for problem in problems:
        err.write(f"exposure-monitor: config error: {problem}\n")
    return EXIT_CONFIG


def _write_summary(
    path: Path,
    config: Config,
    key: ApiKey | None,
    budget: RequestBudget,
    out: TextIO,
    endpoints: Mapping[int, RpcEndpoint],
) -> None:
    spenders = sum(len(c.spenders) for c in config.chains)
    counts = [
        _count(len(config.wallets), "wallet"),
        _count(len(config.chains), "chain"),
        _count(spenders, "spender"),
    ]
    out.write(f"{path}: ok ({', '.join(counts)})\n")
    out.write(f"API: {config.api.base_url}\n")
    out.write(f"API key: {describe_key(config, key)}\n")
    if key is None and is_oneinch_api(config.api.base_url):
        out.write(
            "key-free mode: the chain reader alone serves; no prices (value at risk unpriced)\n"
        )
    for chain in config.chains:
        wallets = config.wallets_on(chain.id)
        name = SUPPORTED_CHAINS.get(chain.id, "unknown chain")
        counts = [_count(len(wallets), "wallet"), _count(len(chain.spenders), "spender")]
        if chain.custom_tokens:
            counts.append(_count(len(chain.custom_tokens), "custom token"))
        out.write(f"{name} (chain {chain.id}): {', '.join(counts)}\n")
        for wallet in wallets:
            out.write(f"  wallet   {_named(wallet.label, wallet.address)}\n")
        for spender in chain.spenders:
            trusted = ", trusted" if spender.trusted else ""
            out.write(f"  spender  {_named(spender.label, spender.address)}{trusted}\n")
        if chain.discovery is not None and chain.id in endpoints:
            endpoint = endpoints[chain.id]
            out.write(
                f"  discovery from block {chain.discovery.start_block}, "
                f"{chain.discovery.confirmations} confirmations, through "
                f"{endpoint.display} ({endpoint.origin})\n"
            )
    rate = config.api.requests_per_second
    prices = (
        f"; after it, price requests: one per chain and {PRICE_TOKENS_PER_REQUEST} tokens at "
        f"risk without a price from the last risk.prices.ttl_s "
        f"{config.risk.prices.ttl_s:g} s (not counted: how many depends on the data)"
        if budget.price_chains
        else ""
    )
    out.write(f"a poll makes {_requests_breakdown(config, budget)}{prices}\n")
    out.write(
        f"minimum poll duration: {_seconds(minimum_duration_s(budget.poll, rate))} s at "
        f"api.requests_per_second {rate:g} (poll.timeout_s {config.poll.timeout_s:g}, "
        f"poll.interval_s {config.poll.interval_s:g})\n"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _named(label: str | None, address: str) -> str:
    checksum = to_checksum(address)
    return f"{label} ({checksum})" if label else checksum


# -- --online -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeReport:
    """What one request to one upstream showed."""

    api: str
    host: str
    keyed: bool
    status: int | None = None
    latency_ms: float | None = None
    problem: str | None = None
    """None when the request succeeded."""

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def key_rejected(self) -> bool:
        return self.status in (401, 403)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def outcome(self) -> str:
        if not self.reachable:
            return f"unreachable ({self.problem})"
        if self.key_rejected:
            whose = "key rejected" if self.keyed else "a key is required (none was sent)"
            auth = f"{whose} (HTTP {self.status}: {self.problem})"
        elif self.problem is not None:
            auth = f"failed (HTTP {self.status}: {self.problem})"
        else:
            auth = "key accepted" if self.keyed else "answered without a key"
        return f"reachable, {auth}"

    def line(self) -> str:
        latency = f", {self.latency_ms:.0f} ms" if self.latency_ms is not None else ""
        return f"{self.api:<15} {self.host}: {self.outcome()}{latency}"


async def probe_upstreams(
    config: Config, key: ApiKey | None, environ: Mapping[str, str] | None = None
) -> list[ProbeReport]:
    """One request per upstream through the real client, one attempt each, no retries."""
    from monitor.runtime import open_client  # aiohttp only when going online

    api = dataclasses.replace(
        config.api, max_attempts=1, timeout_s=min(config.api.timeout_s, PROBE_TIMEOUT_S)
    )
    probe_config = dataclasses.replace(config, api=api)
    chain = next((c for c in config.chains if config.wallets_on(c.id)), config.chains[0])
    wallets = config.wallets_on(chain.id)
    host, keyed = _host(config.api.base_url), key is not None
    records: list[RequestRecord] = []
    reports = []
    oneinch = key is not None or not is_oneinch_api(config.api.base_url)
    async with open_client(probe_config, key, on_request=records.append) as client:
        reports += await _probe_chains(config, key, client.session, environ)
        if not oneinch:
            return reports
        if wallets:
            # The native coin's balance of one wallet (endpoint 3): the smallest answer of
            # the Balance API, and unlike the aggregated endpoint it moves no simulator on.
            balance = client.custom_balances(chain.id, wallets[0].address, [NATIVE_COIN])
            reports.append(await _probe("Balance API", host, keyed, records, balance))
        if config.risk.prices.enabled:
            # The route and currency the daemon's price source uses, for one token.
            price = client.prices(chain.id, [NATIVE_COIN], currency="USD")
            reports.append(await _probe("Spot Price API", host, keyed, records, price))
    return reports


async def _probe_chains(
    config: Config,
    key: ApiKey | None,
    session: aiohttp.ClientSession,
    environ: Mapping[str, str] | None,
) -> list[ProbeReport]:
    """``eth_chainId`` of every discovery endpoint, one attempt each: reachable, and serving
    the chain it is configured for."""
    from monitor.chain.rpc import ChainRpc
    from monitor.oneinch import RateLimiter
    from monitor.runtime import chain_endpoints

    reports = []
    for chain_id, endpoint in chain_endpoints(config, key, environ).items():
        if endpoint is None:
            continue
        records: list[RequestRecord] = []
        rpc = ChainRpc(
            session,
            endpoint,
            limiter=RateLimiter(config.rpc.requests_per_second),
            max_attempts=1,
            timeout_s=min(config.rpc.timeout_s, PROBE_TIMEOUT_S),
            on_request=records.append,
        )
        problem: str | None = None
        try:
            answered = await rpc.chain_id()
        except UpstreamError as exc:
            problem = exc.problem
        else:
            if answered != chain_id:
                problem = (
                    f"eth_chainId answered {answered}, but this endpoint is configured for "
                    f"chain {chain_id}"
                )
        attempt = records[0] if records else None
        status = int(attempt.code) if attempt is not None and attempt.code.isdigit() else None
        reports.append(
            ProbeReport(
                api=f"chain {chain_id} RPC",
                host=endpoint.display,
                keyed=bool(endpoint.headers),
                status=status,
                latency_ms=attempt.duration_s * 1000 if attempt is not None and status else None,
                problem=problem if problem is not None or status is not None else "no answer",
            )
        )
    return reports


async def _probe(
    api_name: str,
    host: str,
    keyed: bool,
    records: list[RequestRecord],
    request: Awaitable[object],
) -> ProbeReport:
    before = len(records)
    problem: str | None = None
    try:
        await request
    except UpstreamError as exc:
        problem = exc.problem
    attempt = records[before] if len(records) > before else None
    status = int(attempt.code) if attempt is not None and attempt.code.isdigit() else None
    return ProbeReport(
        api=api_name,
        host=host,
        keyed=keyed,
        status=status,
        latency_ms=attempt.duration_s * 1000 if attempt is not None and status else None,
        problem=problem if problem is not None or status is not None else "no request made",
    )
