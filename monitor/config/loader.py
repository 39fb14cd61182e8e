"""Strict YAML to ``Config``: unknown keys, wrong types and nonsense values are errors.

Every error is a ``ConfigError`` whose message is one line: the YAML path and the problem,
for example ``chains[0].spenders[2].address: not a valid address ...``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from monitor.config.exploits import read_denylist
from monitor.config.model import (
    DEFAULT_SQLITE_NAME,
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
from monitor.config.webconfig import load_web_config
from monitor.domain.addresses import InvalidAddress, canonical_address, is_address
from monitor.domain.chains import SUPPORTED_CHAINS
from monitor.domain.model import UINT256_MAX
from monitor.errors import ConfigError
from monitor.risk.model import RuleName, Suppression

T = TypeVar("T")

_SECRET_KEY = re.compile(r"(api[_-]?key|apikey|secret|password|token|bearer|authorization)$", re.I)
_KEY_IN_FILE = (
    "the 1inch API key must not be written in the config file; "
    "set ONEINCH_API_KEY or the systemd credential oneinch_api_key"
)
_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg")


# libyaml's parser when PyYAML was built with it (its wheels are): 3x faster on a large config.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """A SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            mark = key_node.start_mark
            raise ConfigError(f"line {mark.line + 1}", f"duplicate key {key!r} in the same mapping")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the YAML file at ``path``."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(source), "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(source), f"cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise ConfigError(where, f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("YAML", f"invalid YAML: {exc}") from None
    return parse_config(data, source=source)


def parse_config(data: object, *, source: Path | None = None) -> Config:
    """Validate an already-loaded YAML document."""
    if data is None:
        data = {}
    root = _Section(data, "")
    api = _parse_api(root.section("api"))
    database = _parse_database(root.section("database"), source)
    poll = _parse_poll(root.section("poll"))
    metrics = _parse_metrics(root.section("metrics"), source)
    rpc = _parse_rpc(root.section("rpc"))
    chains = _parse_chains(root.list("chains", required=True), "chains")
    wallets = _parse_wallets(root.list("wallets", required=True), "wallets", chains)
    risk = _parse_risk(root.section("risk"), source)
    root.finish()
    return Config(
        api=api,
        database=database,
        poll=poll,
        metrics=metrics,
        wallets=wallets,
        chains=chains,
        risk=risk,
        rpc=rpc,
        source=source,
    )


class _Section:
    """A mapping being consumed key by key, so that leftovers are reported as unknown."""

    def __init__(
        self, data: object, path: str, *, not_secret: frozenset[str] = frozenset()
    ) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path or "(top level)", f"expected a mapping, got {_kind(data)}")
        self.path = path
        self._data = dict(data)
        for key in self._data:
            if not isinstance(key, str):
                raise ConfigError(self._at(str(key)), "keys must be strings")
            if key not in not_secret and _SECRET_KEY.search(key):
                raise ConfigError(self._at(key), _KEY_IN_FILE)

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self._data

    def take(self, key: str, check: Callable[[object, str], T], default: T) -> T:
        if key not in self._data or self._data[key] is None:
            self._data.pop(key, None)
            return default
        return check(self._data.pop(key), self._at(key))

    def require(self, key: str, check: Callable[[object, str], T]) -> T:
        if key not in self._data or self._data[key] is None:
            raise ConfigError(self._at(key), "is required")
        return check(self._data.pop(key), self._at(key))

    def section(self, key: str) -> _Section:
        value = self._data.pop(key, None)
        return _Section({} if value is None else value, self._at(key))

    def list(self, key: str, *, required: bool = False) -> tuple[list[object], str]:
        path = self._at(key)
        value = self._data.pop(key, None)
        if value is None:
            if required:
                raise ConfigError(path, "is required (a non-empty list)")
            return [], path
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_kind(value)}")
        if required and not value:
            raise ConfigError(path, "must not be empty")
        return value, path

    def finish(self) -> None:
        for key in self._data:
            raise ConfigError(self._at(key), "unknown key")


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise ConfigError(path, "must not be empty")
    if any(not ch.isprintable() for ch in value):
        raise ConfigError(path, "contains control characters")
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {_kind(value)}")
    return value


def _number(*, minimum: float, maximum: float = math.inf) -> Callable[[object, str], float]:
    def check(value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value) or not minimum <= value <= maximum:
            bound = f"at least {minimum:g}" + (
                f" and at most {maximum:g}" if maximum < math.inf else ""
            )
            raise ConfigError(path, f"must be {bound}, got {value!r}")
        return float(value)

    return check


def _integer(*, minimum: int, maximum: int) -> Callable[[object, str], int]:
    def check(value: object, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected a whole number, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise ConfigError(path, f"must be between {minimum} and {maximum}, got {value}")
        return value

    return check


def _address(value: object, path: str) -> str:
    try:
        return canonical_address(value)
    except InvalidAddress as exc:
        raise ConfigError(path, exc.reason) from None


def _chain_id(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected a chain id (a whole number), got {_kind(value)}")
    if value not in SUPPORTED_CHAINS:
        supported = ", ".join(str(c) for c in SUPPORTED_CHAINS)
        raise ConfigError(
            path, f"unsupported chain id {value} (the Balance API serves {supported})"
        )
    return value


def _base_url(value: object, path: str) -> str:
    text = _string(value, path)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, f"expected an http(s) URL, got {text!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(path, "must not contain credentials, a query or a fragment")
    return text.rstrip("/")


def _parse_api(section: _Section) -> ApiSettings:
    defaults = ApiSettings()
    api = ApiSettings(
        base_url=section.take("base_url", _base_url, defaults.base_url),
        requests_per_second=section.take(
            "requests_per_second",
            _number(minimum=0.01, maximum=10_000),
            defaults.requests_per_second,
        ),
        timeout_s=section.take("timeout_s", _number(minimum=0.1, maximum=600), defaults.timeout_s),
        max_wallets_per_request=section.take(
            "max_wallets_per_request",
            _integer(minimum=1, maximum=1000),
            defaults.max_wallets_per_request,
        ),
        max_attempts=section.take(
            "max_attempts", _integer(minimum=1, maximum=20), defaults.max_attempts
        ),
        backoff_initial_s=section.take(
            "backoff_initial_s", _number(minimum=0.0, maximum=600), defaults.backoff_initial_s
        ),
        backoff_max_s=section.take(
            "backoff_max_s", _number(minimum=0.0, maximum=3600), defaults.backoff_max_s
        ),
        retry_after_max_s=section.take(
            "retry_after_max_s", _number(minimum=0.0, maximum=3600), defaults.retry_after_max_s
        ),
        filter_empty=section.take("filter_empty", _boolean, defaults.filter_empty),
    )
    section.finish()
    if api.backoff_max_s < api.backoff_initial_s:
        raise ConfigError(section._at("backoff_max_s"), "must not be below backoff_initial_s")
    return api


def _default_database_url(source: Path | None) -> str:
    state_dir = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
    directory = Path(state_dir.split(":")[0]) if state_dir else Path.cwd()
    return f"sqlite+aiosqlite:///{directory / DEFAULT_SQLITE_NAME}"


def _database_url(value: object, path: str) -> str:
    text = _string(value, path)
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme not in _DRIVERS:
        raise ConfigError(
            path,
            f"unsupported URL scheme {scheme or text.split(':', 1)[0]!r}; "
            f"name the async driver: one of {', '.join(d + '://' for d in _DRIVERS)}",
        )
    return text


_SQLITE_FILE_PREFIX = "sqlite+aiosqlite:///"


def _sqlite_relative_to(url: str, source: Path | None) -> str:
    """A relative SQLite file made absolute against the config file's folder, like every
    other relative path in the config: the working directory of whoever runs a command must
    not decide which database it reads (a wrong one is silently created empty)."""
    if source is None or not url.startswith(_SQLITE_FILE_PREFIX):
        return url
    file, separator, query = url.removeprefix(_SQLITE_FILE_PREFIX).partition("?")
    # Four slashes (absolute), in-memory, and SQLite URI filenames stay as written.
    if not file or file.startswith("/") or file == ":memory:" or file.startswith("file:"):
        return url
    return f"{_SQLITE_FILE_PREFIX}{source.resolve().parent / file}{separator}{query}"


def _parse_database(section: _Section, source: Path | None) -> DatabaseSettings:
    defaults = DatabaseSettings(url="")
    url = section.take("url", _database_url, "")
    url = _sqlite_relative_to(url, source) if url else _default_database_url(source)
    retention: int | None = defaults.retention_days
    if section.has("retention_days"):
        # An explicit null keeps history forever; absent means the default.
        retention = section.take("retention_days", _integer(minimum=1, maximum=36_500), None)
    settings = DatabaseSettings(
        url=url,
        migrate_on_start=section.take("migrate_on_start", _boolean, defaults.migrate_on_start),
        retention_days=retention,
    )
    section.finish()
    return settings


def _parse_poll(section: _Section) -> PollSettings:
    interval_s = section.take("interval_s", _number(minimum=1, maximum=86_400), 300.0)
    timeout_s = section.take(
        "timeout_s", _number(minimum=0.5, maximum=interval_s), round(interval_s * 0.8, 3)
    )
    poll = PollSettings(
        interval_s=interval_s,
        timeout_s=timeout_s,
        jitter_s=section.take(
            "jitter_s", _number(minimum=0, maximum=interval_s), min(interval_s * 0.1, 30.0)
        ),
        shutdown_grace_s=section.take("shutdown_grace_s", _number(minimum=0, maximum=3600), 30.0),
    )
    section.finish()
    return poll


def parse_listen(value: object, path: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6); port 0 means any free port."""
    text = _string(value, path)
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text)
    if not match:
        raise ConfigError(path, f"expected HOST:PORT (IPv6 as [::1]:PORT), got {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ConfigError(path, f"port must be between 0 and 65535, got {port}")
    return host, port


def _parse_metrics(section: _Section, source: Path | None) -> MetricsSettings:
    defaults = MetricsSettings()
    host, port = section.take("listen", parse_listen, (defaults.host, defaults.port))
    web_config_file = section.take(
        "web_config_file", lambda v, p: _relative_path(v, p, source), None
    )
    metrics = MetricsSettings(
        host=host,
        port=port,
        web_config_file=web_config_file,
        web=load_web_config(web_config_file) if web_config_file is not None else None,
        max_position_series=section.take(
            "max_position_series",
            _integer(minimum=0, maximum=10_000_000),
            defaults.max_position_series,
        ),
        max_finding_series=section.take(
            "max_finding_series",
            _integer(minimum=0, maximum=10_000_000),
            defaults.max_finding_series,
        ),
        ready_after_intervals=section.take(
            "ready_after_intervals",
            _number(minimum=1, maximum=1000),
            defaults.ready_after_intervals,
        ),
    )
    section.finish()
    return metrics


def _parse_chains(items: tuple[list[object], str], _: str) -> tuple[ChainConfig, ...]:
    entries, path = items
    chains: list[ChainConfig] = []
    seen: dict[int, str] = {}
    for i, entry in enumerate(entries):
        at = f"{path}[{i}]"
        section = _Section(entry, at)
        chain_id = section.require("id", _chain_id)
        if chain_id in seen:
            raise ConfigError(
                f"{at}.id", f"chain {chain_id} is already configured at {seen[chain_id]}"
            )
        seen[chain_id] = at
        discovery = _parse_discovery(section, f"{at}.discovery")
        # With discovery on, the spenders are found on-chain: naming some is optional.
        spenders = _parse_spenders(section.list("spenders", required=discovery is None))
        custom_tokens = _parse_custom_tokens(section.list("custom_tokens"))
        rpc = section.section("rpc")
        rpc_url = rpc.take("url", _rpc_url, None)
        rpc.finish()
        section.finish()
        chains.append(
            ChainConfig(
                id=chain_id,
                spenders=spenders,
                custom_tokens=custom_tokens,
                rpc_url=rpc_url,
                discovery=discovery,
            )
        )
    return tuple(chains)


def _parse_discovery(chain: _Section, path: str) -> DiscoverySettings | None:
    """``discovery:`` present (a mapping, empty, or ``true``) is on; absent or ``false`` off."""
    if not chain.has("discovery"):
        return None
    value = chain.take("discovery", lambda v, _: v, None)
    if value is False:
        return None
    if value is None or value is True:
        return DiscoverySettings()
    section = _Section(value, path)
    defaults = DiscoverySettings()
    settings = DiscoverySettings(
        start_block=section.take(
            "start_block", _integer(minimum=0, maximum=2**63 - 1), defaults.start_block
        ),
        confirmations=section.take(
            "confirmations", _integer(minimum=0, maximum=10_000), defaults.confirmations
        ),
    )
    section.finish()
    return settings


def _rpc_url(value: object, path: str) -> str:
    """An http(s) JSON-RPC URL. It may carry a provider key in its path or query, so no error
    here ever repeats it."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"expected an http(s) URL, got {_kind(value)}")
    text = value.strip()
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(path, "expected an http(s) URL with a host (the value is not shown)")
    return text


def _parse_rpc(section: _Section) -> RpcSettings:
    defaults = RpcSettings()
    rpc = RpcSettings(
        requests_per_second=section.take(
            "requests_per_second",
            _number(minimum=0.01, maximum=10_000),
            defaults.requests_per_second,
        ),
        timeout_s=section.take("timeout_s", _number(minimum=0.1, maximum=600), defaults.timeout_s),
        max_attempts=section.take(
            "max_attempts", _integer(minimum=1, maximum=20), defaults.max_attempts
        ),
        max_block_range=section.take(
            "max_block_range", _integer(minimum=1, maximum=10_000_000), defaults.max_block_range
        ),
        wallets_per_query=section.take(
            "wallets_per_query", _integer(minimum=1, maximum=1000), defaults.wallets_per_query
        ),
        calls_per_multicall=section.take(
            "calls_per_multicall", _integer(minimum=1, maximum=5000), defaults.calls_per_multicall
        ),
        max_batch_size=section.take(
            "max_batch_size", _integer(minimum=1, maximum=1000), defaults.max_batch_size
        ),
    )
    section.finish()
    return rpc


def _parse_custom_tokens(items: tuple[list[object], str]) -> tuple[CustomTokenConfig, ...]:
    """Each entry is an address, or ``{address, symbol?, decimals?}``."""
    entries, path = items
    tokens: list[CustomTokenConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        at = f"{path}[{i}]"
        if isinstance(entry, str):
            token = CustomTokenConfig(address=_address(entry, at))
        else:
            section = _Section(entry, at)
            token = CustomTokenConfig(
                address=section.require("address", _address),
                symbol=section.take("symbol", _string, None),
                decimals=section.take("decimals", _integer(minimum=0, maximum=255), None),
            )
            section.finish()
        if token.address in seen:
            raise ConfigError(at, f"duplicate custom token (same as {path}[{seen[token.address]}])")
        seen[token.address] = i
        tokens.append(token)
    return tuple(tokens)


def _parse_spenders(items: tuple[list[object], str]) -> tuple[SpenderConfig, ...]:
    entries, path = items
    spenders: list[SpenderConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        at = f"{path}[{i}]"
        section = _Section(entry, at)
        address = section.require("address", _address)
        if address in seen:
            raise ConfigError(
                f"{at}.address", f"duplicate spender (same as {path}[{seen[address]}])"
            )
        seen[address] = i
        spender = SpenderConfig(
            address=address,
            label=section.take("label", _string, None),
            trusted=section.take("trusted", _boolean, False),
        )
        section.finish()
        spenders.append(spender)
    return tuple(spenders)


def _parse_wallets(
    items: tuple[list[object], str], _: str, chains: tuple[ChainConfig, ...]
) -> tuple[WalletConfig, ...]:
    entries, path = items
    configured = {c.id for c in chains}
    wallets: list[WalletConfig] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        at = f"{path}[{i}]"
        section = _Section(entry, at)
        address = section.require("address", _address)
        if address in seen:
            raise ConfigError(
                f"{at}.address", f"duplicate wallet (same as {path}[{seen[address]}])"
            )
        seen[address] = i
        label = section.take("label", _string, None)
        chain_ids: tuple[int, ...] | None = None
        if section.has("chains"):
            chain_entries, chains_path = section.list("chains")
            if not chain_entries:
                raise ConfigError(chains_path, "must not be empty (omit it to watch every chain)")
            ids: list[int] = []
            for j, value in enumerate(chain_entries):
                chain_id = _chain_id(value, f"{chains_path}[{j}]")
                if chain_id not in configured:
                    raise ConfigError(
                        f"{chains_path}[{j}]", f"chain {chain_id} is not under chains:"
                    )
                if chain_id in ids:
                    raise ConfigError(f"{chains_path}[{j}]", f"duplicate chain {chain_id}")
                ids.append(chain_id)
            chain_ids = tuple(ids)
        section.finish()
        wallets.append(WalletConfig(address=address, label=label, chains=chain_ids))
    return tuple(wallets)


def _threshold(value: object, path: str) -> int:
    """An amount of base units: a whole number, or a string of decimal digits (YAML readers
    elsewhere may turn a 78-digit number into a float)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        amount = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = value
    else:
        raise ConfigError(
            path, f"expected a whole number or a string of decimal digits, got {_kind(value)}"
        )
    if not 1 <= amount <= UINT256_MAX:
        shown = str(amount) if len(str(amount)) <= 80 else f"a {len(str(amount))}-digit number"
        raise ConfigError(path, f"must be between 1 and 2^256-1, got {shown}")
    return amount


def _usd(value: object, path: str) -> Decimal:
    """A positive amount of US dollars, exactly: a number or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(path, f"expected a number, got {_kind(value)}")
    try:
        # str() first: Decimal(0.1) would keep the binary float's 55 digits.
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(path, f"expected a number, got {value!r:.40}") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(path, f"must be greater than 0, got {value!r:.40}")
    return amount


def _positive(*, maximum: float) -> Callable[[object, str], float]:
    def check(value: object, path: str) -> float:
        number = _number(minimum=-math.inf, maximum=maximum)(value, path)
        if number <= 0:
            raise ConfigError(path, f"must be greater than 0, got {value!r}")
        return number

    return check


def _until(value: object, path: str) -> datetime:
    """A date (the suppression ends as that day begins, UTC) or a datetime (naive is UTC)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                date.fromisoformat(text)
                if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)
                else datetime.fromisoformat(text)
            )
        except ValueError:
            raise ConfigError(
                path, f"expected an ISO date or datetime (2025-07-01T12:00:00Z), got {text!r:.40}"
            ) from None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    raise ConfigError(path, f"expected an ISO date or datetime, got {_kind(value)}")


def _rule_name(value: object, path: str) -> str:
    names = [r.value for r in RuleName]
    if value not in names:
        raise ConfigError(path, f"unknown rule {value!r:.40}; one of {', '.join(names)}")
    return str(value)


def _token_address(value: object, path: str) -> str:
    # "token" is a key the secret check refuses elsewhere: never echo a value that is not
    # address-shaped, in case it is the API key in the wrong place.
    if not is_address(value):
        raise ConfigError(path, "not a valid address (want 0x and 40 hex digits)")
    return _address(value, path)


def _relative_path(value: object, path: str, source: Path | None) -> Path:
    candidate = Path(_string(value, path)).expanduser()
    if not candidate.is_absolute():
        # Relative to the config file, so the daemon's working directory does not matter.
        base = source.resolve().parent if source is not None else Path.cwd()
        candidate = base / candidate
    return candidate


def _parse_risk(section: _Section, source: Path | None) -> RiskSettings:
    defaults = RiskSettings()
    threshold = section.take("unlimited_threshold", _threshold, defaults.unlimited_threshold)
    value_at_risk = section.take("value_at_risk_usd", _usd, defaults.value_at_risk_usd)
    fresh_hours = section.take(
        "fresh_approval_hours", _positive(maximum=87_600), defaults.fresh_approval_hours
    )
    denylist_file = section.take(
        "denylist_file", lambda v, p: _relative_path(v, p, source), defaults.denylist_file
    )
    prices_section = section.section("prices")
    prices = PriceSettings(
        enabled=prices_section.take("enabled", _boolean, PriceSettings().enabled),
        ttl_s=prices_section.take(
            "ttl_s", _number(minimum=0, maximum=86_400), PriceSettings().ttl_s
        ),
        timeout_s=prices_section.take(
            "timeout_s", _number(minimum=1, maximum=600), PriceSettings().timeout_s
        ),
    )
    prices_section.finish()
    ignore = _parse_ignore(section.list("ignore"))
    section.finish()
    return RiskSettings(
        unlimited_threshold=threshold,
        value_at_risk_usd=value_at_risk,
        fresh_approval_hours=fresh_hours,
        denylist_file=denylist_file,
        denylist=read_denylist(denylist_file) if denylist_file is not None else (),
        prices=prices,
        ignore=ignore,
    )


def _parse_ignore(items: tuple[list[object], str]) -> tuple[Suppression, ...]:
    entries, path = items
    suppressions: list[Suppression] = []
    for i, entry in enumerate(entries):
        at = f"{path}[{i}]"
        section = _Section(entry, at, not_secret=frozenset({"token"}))
        suppression = Suppression(
            wallet=section.take("wallet", _address, None),
            spender=section.take("spender", _address, None),
            token=section.take("token", _token_address, None),
            rule=section.take("rule", _rule_name, None),
            chain_id=section.take("chain_id", _chain_id, None),
            until=section.take("until", _until, None),
            reason=section.require("reason", _string),
        )
        section.finish()
        if not (suppression.wallet or suppression.spender or suppression.token or suppression.rule):
            raise ConfigError(at, "give at least one of wallet, spender, token or rule")
        suppressions.append(suppression)
    return tuple(suppressions)
