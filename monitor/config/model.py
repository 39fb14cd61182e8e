"""The validated configuration. Every address here is canonical (lowercase)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from monitor.domain.addresses import to_checksum

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
    migrate_on_start: bool = True
    retention_days: int | None = 365
    """Polls older than this are pruned (daily by the daemon, or ``db prune``); None keeps
    everything."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PollSettings:
    interval_s: float = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT


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


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomTokenConfig:
    """A token missing from 1inch's list, polled through the POST endpoints.

    Those endpoints return no metadata, so ``symbol`` and ``decimals`` can be given here.
    """

    address: str
    symbol: str | None = None
    decimals: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainConfig:
    id: int
    spenders: tuple[SpenderConfig, ...]
    custom_tokens: tuple[CustomTokenConfig, ...] = ()

    @property
    def custom_token_addresses(self) -> tuple[str, ...]:
        return tuple(t.address for t in self.custom_tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    api: ApiSettings
    database: DatabaseSettings
    poll: PollSettings
    metrics: MetricsSettings
    wallets: tuple[WalletConfig, ...]
    chains: tuple[ChainConfig, ...]
    source: Path | None = None

    def wallets_on(self, chain_id: int) -> tuple[WalletConfig, ...]:
        """The wallets watched on ``chain_id``, in configuration order."""
        return tuple(w for w in self.wallets if w.chains is None or chain_id in w.chains)

    def wallet(self, address: str) -> WalletConfig | None:
        return next((w for w in self.wallets if w.address == address), None)

    def spender(self, chain_id: int, address: str) -> SpenderConfig | None:
        for chain in self.chains:
            if chain.id == chain_id:
                return next((s for s in chain.spenders if s.address == address), None)
        return None
