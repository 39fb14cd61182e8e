"""Where each chain's JSON-RPC node is: the first of four places that names one.

1. ``chains[i].rpc.url`` in the YAML;
2. the environment variable ``EXPOSURE_MONITOR_RPC_URL_<chain id>``;
3. the systemd credential ``rpc_url_<chain id>`` (``$CREDENTIALS_DIRECTORY``, set by
   ``LoadCredential=``), read as ``monitor.config.secrets`` reads the API key;
4. with a 1inch key, 1inch's Web3 RPC API, ``{api.base_url}/web3/{chain id}``, with the key as
   a bearer token; with no key but an ``api.base_url`` that is not the real 1inch API (the
   simulator), the same path without a key, as the Balance API is asked there.

A URL may hold a provider key in its path, query or userinfo: a ``ConfigError`` here names
where the URL came from and never repeats it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from monitor.chain.rpc import RpcEndpoint
from monitor.config.secrets import ApiKey, is_oneinch_api, read_credential
from monitor.errors import ConfigError

ENV_PREFIX = "EXPOSURE_MONITOR_RPC_URL_"
CREDENTIAL_PREFIX = "rpc_url_"
ONEINCH_WEB3_ORIGIN = "1inch Web3 RPC API"


def resolve_endpoint(
    chain_id: int,
    *,
    configured_url: str | None,
    configured_at: str,
    environ: Mapping[str, str],
    credentials_dir: Path | None,
    oneinch_base_url: str,
    oneinch_key: ApiKey | None,
) -> RpcEndpoint | None:
    """The JSON-RPC endpoint of chain ``chain_id``, or None when nothing names one.

    ``configured_at`` is the YAML path of ``configured_url`` (``chains[0].rpc.url``). A URL
    that is not http(s) with a host is a ``ConfigError`` naming its origin.
    """
    if configured_url is not None:
        return _endpoint(chain_id, configured_url, configured_at)
    env_name = f"{ENV_PREFIX}{chain_id}"
    value = environ.get(env_name)
    if value is not None:
        return _endpoint(chain_id, value, f"environment variable {env_name}")
    if credentials_dir is not None:
        name = f"{CREDENTIAL_PREFIX}{chain_id}"
        path = credentials_dir / name
        if path.is_file():
            origin = f"credential {name}"
            return _endpoint(chain_id, read_credential(path, origin), origin)
    web3_url = f"{oneinch_base_url.rstrip('/')}/web3/{chain_id}"
    if oneinch_key is not None:
        return _endpoint(
            chain_id,
            web3_url,
            ONEINCH_WEB3_ORIGIN,
            headers={"Authorization": f"Bearer {oneinch_key.reveal()}"},
        )
    if not is_oneinch_api(oneinch_base_url):
        return _endpoint(chain_id, web3_url, ONEINCH_WEB3_ORIGIN)
    return None


def _endpoint(
    chain_id: int, url: str, origin: str, *, headers: Mapping[str, str] | None = None
) -> RpcEndpoint:
    url = url.strip()
    if not url:
        raise ConfigError(origin, "the RPC URL is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ConfigError(
            origin, "the RPC URL contains whitespace or control characters (not shown)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(origin, "not a valid URL (the value is not shown)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(origin, "expected an http:// or https:// URL (the value is not shown)")
    if not parts.hostname:
        raise ConfigError(origin, "expected a URL with a host (the value is not shown)")
    endpoint = RpcEndpoint(chain_id=chain_id, url=url, headers=dict(headers or {}), origin=origin)
    if endpoint.display == "<invalid URL>":
        raise ConfigError(origin, "not a valid URL (the value is not shown)")
    return endpoint
