"""TLS and basic auth for the listener, in the Prometheus exporter-toolkit ``web-config`` format.

The same file an existing exporter uses works here, so Prometheus scrape configs with
``scheme: https``, ``tls_config`` and ``basic_auth`` need no change. Supported keys::

    tls_server_config:
      cert_file: /etc/exposure-monitor/tls.crt
      key_file: /etc/exposure-monitor/tls.key
      client_auth_type: NoClientCert | RequireAndVerifyClientCert   (default NoClientCert)
      client_ca_file: /etc/exposure-monitor/ca.crt                   (with RequireAndVerify...)
      min_version: TLS12 | TLS13                                     (default TLS12)
    basic_auth_users:
      prometheus: $2y$10$...   (bcrypt hashes, as `htpasswd -nBC 10 "" | tr -d ':\\n'` prints)

Paths are relative to the web-config file. Unknown keys are errors.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from monitor.errors import ConfigError

_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    """User name -> bcrypt hash."""


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web-config file; every problem is a ``ConfigError`` naming it."""
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(where, f"cannot read web config: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(where, "expected a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ConfigError(
            f"{where}#{sorted(unknown)[0]}",
            "unknown key (supported: tls_server_config, basic_auth_users)",
        )
    return WebConfig(
        ssl_context=_tls(data.get("tls_server_config"), path),
        users=_users(data.get("basic_auth_users"), where),
    )


def _tls(data: object, path: Path) -> ssl.SSLContext | None:
    where = f"{path}#tls_server_config"
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(where, "expected a mapping")
    unknown = set(data) - _TLS_KEYS
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown key")
    for key in ("cert_file", "key_file"):
        if not isinstance(data.get(key), str):
            raise ConfigError(f"{where}.{key}", "is required (a file path)")
    auth = data.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ConfigError(f"{where}.client_auth_type", f"one of {', '.join(_CLIENT_AUTH)}")
    version = data.get("min_version", "TLS12")
    if version not in _VERSIONS:
        raise ConfigError(f"{where}.min_version", f"one of {', '.join(_VERSIONS)}")
    base = path.parent
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[version]
    try:
        context.load_cert_chain(base / data["cert_file"], base / data["key_file"])
        if _CLIENT_AUTH[auth] == ssl.CERT_REQUIRED:
            ca = data.get("client_ca_file")
            if not isinstance(ca, str):
                raise ConfigError(
                    f"{where}.client_ca_file", "is required with RequireAndVerifyClientCert"
                )
            context.load_verify_locations(base / ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(where, f"cannot load the certificate or key: {exc}") from None
    return context


def _users(data: object, where: str) -> dict[str, bytes]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}#basic_auth_users", "expected a mapping of user: bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in data.items():
        if not isinstance(user, str) or not isinstance(hashed, str) or not hashed.startswith("$2"):
            # Never echo the value: it is a password hash.
            raise ConfigError(
                f"{where}#basic_auth_users.{user}", "expected a bcrypt hash ($2a$, $2b$ or $2y$)"
            )
        users[user] = hashed.encode()
    return users
