"""The validated configuration. Every address here is canonical (lowercase)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from monitor.config.webconfig import WebConfig
from monitor.domain.addresses import to_checksum
from monitor.risk.exploits import ExploitEntry
from monitor.risk.model import (
    DEFAULT_FRESH_APPROVAL_HOURS,
    DEFAULT_UNLIMITED_THRESHOLD,
    DEFAULT_VALUE_AT_RISK_USD,
    KnownSpender,
    RuleSettings,
    Suppression,
)

DEFAULT_BASE_URL = "https://api.1inch.dev"
DEFAULT_METRICS_PORT = 9751
DEFAULT_SQLITE_NAME = "exposure-monitor.sqlite"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiSettings:
    base_url: str = DEFAULT_BASE_URL
    requests_per_second: float = 1.0
    timeout_s: float = 30.0
    max_wallets_per_request: int = 50
    max_attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    retry_after_max_s: float = 300.0
    filter_empty: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseSettings:
    url: str
    """An async SQLAlchemy URL. A relative SQLite path in the file is already resolved
    against the config file's folder; without ``database.url``, the SQLite file
    ``DEFAULT_SQLITE_NAME`` in ``$STATE_DIRECTORY`` (systemd) or the working directory."""
    migrate_on_start: bool = True
    retention_days: int | None = 365
    """Polls older than this are pruned (daily by the daemon, or ``db prune``); None keeps
    everything."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PollSettings:
    interval_s: float = 300.0
    timeout_s: float = 240.0
    """Hard limit on one poll (requests, retries and recording); at most the interval."""
    jitter_s: float = 30.0
    """Random delay added to each scheduled poll, so many monitors do not poll in step."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM, how long the in-flight poll may still run before it is cancelled."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT
    max_position_series: int = 50_000
    """Cap on allowance, unlimited and balance series; unlimited approvals are kept first."""
    max_finding_series: int = 10_000
    """Cap on finding series; critical ones are kept first. 0 exports none (counts remain)."""
    ready_after_intervals: float = 3.0
    """/readyz fails once the last successful poll is older than this many intervals."""
    web_config_file: Path | None = None
    """An exporter-toolkit web-config file: TLS and basic auth for the listener."""
    web: WebConfig | None = None
    """That file, loaded and checked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletConfig:
    address: str
    label: str | None = None
    chains: tuple[int, ...] | None = None
    """None: watched on every configured chain."""

    @property
    def checksum(self) -> str:
        return to_checksum(self.address)

    @property
    def display(self) -> str:
        return self.label or self.checksum


@dataclass(frozen=True, slots=True, kw_only=True)
class SpenderConfig:
    address: str
    label: str | None = None
    trusted: bool = False

    @property
    def checksum(self) -> str:
        return to_checksum(self.address)

    @property
    def display(self) -> str:
        return self.label or self.checksum

    @property
    def known(self) -> KnownSpender:
        """What the risk rules need to know of this spender."""
        return KnownSpender(label=self.label, trusted=self.trusted)


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomTokenConfig:
    """A token missing from 1inch's list, polled through the POST endpoints.

    Those endpoints return no metadata, so ``symbol`` and ``decimals`` can be given here.
    """

    address: str
    symbol: str | None = None
    decimals: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcSettings:
    """The ``rpc:`` section: how the chain reader talks to every chain's JSON-RPC endpoint.

    The endpoints themselves are per chain (``chains[].rpc.url``, the environment variable
    ``EXPOSURE_MONITOR_RPC_URL_<chain id>``, the systemd credential ``rpc_url_<chain id>``, or
    1inch's Web3 RPC API with the 1inch key), resolved by ``monitor.chain.endpoints``.
    """

    requests_per_second: float = 10.0
    """Per endpoint; the 1inch Web3 RPC API shares the 1inch key's limiter instead."""
    timeout_s: float = 30.0
    max_attempts: int = 5
    max_block_range: int = 10_000
    """The widest ``eth_getLogs`` range asked; halved while a provider refuses, grown back."""
    wallets_per_query: int = 100
    """Wallets OR-ed into one ``eth_getLogs`` topic filter."""
    calls_per_multicall: int = 1000
    """Calls in one Multicall3 ``aggregate3``. 1,000 ``allowance``/``balanceOf`` calls cost
    about 7M gas (cold storage reads and account accesses, Multicall3's loop, the calldata),
    well under the gas cap nodes put on an ``eth_call`` (geth's default 50M; providers' are
    as high or higher), and their ~256 KB of calldata make one request body of ~512 KB: the
    reader sends such aggregates one to a JSON-RPC batch (see ``monitor.chain.reads``)."""
    max_batch_size: int = 100
    """JSON-RPC calls in one batch array."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoverySettings:
    """``chains[].discovery``: find every ERC-20 approval of the wallets from ``Approval``
    logs and read it live on-chain. Present means on."""

    start_block: int = 0
    """The first block scanned for a wallet with no cursor yet."""
    confirmations: int = 12
    """Logs are scanned up to head minus this many blocks, so a reorg cannot feed them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainConfig:
    id: int
    spenders: tuple[SpenderConfig, ...]
    custom_tokens: tuple[CustomTokenConfig, ...] = ()
    rpc_url: str | None = None
    """``chains[].rpc.url``: a JSON-RPC endpoint. May carry a provider key: never shown."""
    discovery: DiscoverySettings | None = None
    """None: only the configured spenders are watched, through 1inch."""

    def __repr__(self) -> str:  # the RPC URL may hold a key: never in a repr or a traceback
        return (
            f"ChainConfig(id={self.id}, spenders={len(self.spenders)}, "
            f"custom_tokens={len(self.custom_tokens)}, "
            f"rpc_url={'***' if self.rpc_url else None}, discovery={self.discovery!r})"
        )

    @property
    def custom_token_addresses(self) -> tuple[str, ...]:
        return tuple(t.address for t in self.custom_tokens)


def spender_index(chains: Iterable[ChainConfig]) -> dict[tuple[int, str], KnownSpender]:
    """The configured spenders by (chain_id, address), as the risk rules take them."""
    return {(c.id, s.address): s.known for c in chains for s in c.spenders}


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceSettings:
    enabled: bool = True
    """Ask the Spot Price API for USD prices (needed for value at risk)."""
    ttl_s: float = 300.0
    """How long a price, or the absence of one, is reused before it is asked again."""
    timeout_s: float = 20.0
    """How long recording a poll (or the daemon's restore) waits for prices; past it, the
    prices known earlier stand in (at most a day old), as when the API fails."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskSettings:
    """The ``risk:`` section: the rules' settings (``rules``), the denylist and prices."""

    unlimited_threshold: int = DEFAULT_UNLIMITED_THRESHOLD
    value_at_risk_usd: Decimal = DEFAULT_VALUE_AT_RISK_USD
    """A spender that could move more than this from one wallet (USD) is critical."""
    fresh_approval_hours: float = DEFAULT_FRESH_APPROVAL_HOURS
    denylist_file: Path | None = None
    """The user's extra exploited spenders (absolute); already read into ``denylist``."""
    denylist: tuple[ExploitEntry, ...] = ()
    prices: PriceSettings = field(default_factory=PriceSettings)
    ignore: tuple[Suppression, ...] = ()

    @property
    def rules(self) -> RuleSettings:
        """What the risk rules take of this section."""
        return RuleSettings(
            unlimited_threshold=self.unlimited_threshold,
            value_at_risk_usd=self.value_at_risk_usd,
            fresh_approval_hours=self.fresh_approval_hours,
            suppressions=self.ignore,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    api: ApiSettings
    database: DatabaseSettings
    poll: PollSettings
    metrics: MetricsSettings
    wallets: tuple[WalletConfig, ...]
    chains: tuple[ChainConfig, ...]
    risk: RiskSettings = field(default_factory=RiskSettings)
    rpc: RpcSettings = field(default_factory=RpcSettings)
    source: Path | None = None
    _wallets_by_address: dict[str, WalletConfig] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    """``wallets`` by address: ``wallet`` is asked once per printed row (300,000 of them for
    a large ``once``), and a scan of 2,000 wallets each time was a sixth of its CPU."""

    def __post_init__(self) -> None:
        self._wallets_by_address.update((w.address, w) for w in reversed(self.wallets))

    @property
    def discovery_chains(self) -> tuple[ChainConfig, ...]:
        """The chains whose approvals are discovered from logs."""
        return tuple(c for c in self.chains if c.discovery is not None)

    def wallets_on(self, chain_id: int) -> tuple[WalletConfig, ...]:
        """The wallets watched on ``chain_id``, in configuration order."""
        return tuple(w for w in self.wallets if w.chains is None or chain_id in w.chains)

    def wallet(self, address: str) -> WalletConfig | None:
        """The configured wallet at ``address`` (lowercase), if any (the first, should the
        address be listed twice)."""
        return self._wallets_by_address.get(address)

    def spender(self, chain_id: int, address: str) -> SpenderConfig | None:
        for chain in self.chains:
            if chain.id == chain_id:
                return next((s for s in chain.spenders if s.address == address), None)
        return None
