"""Configuration: one YAML file validated once into frozen objects, plus the API key.

``exploits`` reads the exploited-spender files (the bundled list, the user's denylist); the
values the risk rules take (``RiskSettings.rules``, ``model.spender_index``) are built here
from ``monitor.risk.model``'s types, so configuration depends on the risk package, never the
reverse.
"""

from monitor.config.loader import load_config, parse_config
from monitor.config.model import (
    ApiSettings,
    ChainConfig,
    Config,
    CustomTokenConfig,
    DatabaseSettings,
    DiscoverySettings,
    MetricsSettings,
    PollSettings,
    PriceSettings,
    RiskSettings,
    RpcSettings,
    SpenderConfig,
    WalletConfig,
)
from monitor.config.secrets import ApiKey, load_api_key

__all__ = [
    "ApiKey",
    "ApiSettings",
    "ChainConfig",
    "Config",
    "CustomTokenConfig",
    "DatabaseSettings",
    "DiscoverySettings",
    "MetricsSettings",
    "PollSettings",
    "PriceSettings",
    "RiskSettings",
    "RpcSettings",
    "SpenderConfig",
    "WalletConfig",
    "load_api_key",
    "load_config",
    "parse_config",
]
