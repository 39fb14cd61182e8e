"""Configuration: one YAML file validated once into frozen objects, plus the API key."""

from monitor.config.loader import load_config, parse_config
from monitor.config.model import (
    ApiSettings,
    ChainConfig,
    Config,
    CustomTokenConfig,
    DatabaseSettings,
    MetricsSettings,
    PollSettings,
    PriceSettings,
    RiskSettings,
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
    "MetricsSettings",
    "PollSettings",
    "PriceSettings",
    "RiskSettings",
    "SpenderConfig",
    "WalletConfig",
    "load_api_key",
    "load_config",
    "parse_config",
]
