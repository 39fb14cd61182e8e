"""Readers for loaded YAML/JSON documents that name the offending path in every error.

Each reader takes the value and its path (``chains[0].tokens[2].decimals``) and either returns
a checked value or raises ``ConfigError(path, problem)``. Booleans are never accepted where a
number is expected (YAML's ``yes`` must not become 1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation

from monitor.domain.addresses import InvalidAddress, canonical_address
from monitor.domain.model import UINT256_MAX
from monitor.errors import ConfigError

NAMED_AMOUNTS: dict[str, int] = {
    "max": UINT256_MAX,
    "uint256max": UINT256_MAX,
    "uint160max": 2**160 - 1,
    "uint96max": 2**96 - 1,
}
"""Words accepted for an amount: the "unlimited" approval conventions seen on chain."""

_DIGITS = re.compile(r"[0-9]+(?:_[0-9]+)*")


def key_path(path: str, key: str) -> str:
    """The path of ``key`` inside the mapping at ``path``."""
    return f"{path}.{key}" if path else key


def item_path(path: str, index: int) -> str:
    """The path of item ``index`` of the list at ``path``."""
    return f"{path}[{index}]"


def mapping(
    data: object,
    path: str,
    *,
    allowed: Iterable[str],
    required: Iterable[str] = (),
) -> Mapping[str, object]:
    """A mapping with string keys, only ``allowed`` ones, and every ``required`` one present."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"must be a mapping, got {_kind(data)}")
    allowed_keys = tuple(allowed)
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(path, f"keys must be strings, got {key!r}")
        if key not in allowed_keys:
            raise ConfigError(
                key_path(path, key), f"unknown key (expected one of: {', '.join(allowed_keys)})"
            )
    for key in required:
        if key not in data:
            raise ConfigError(key_path(path, key), "is required")
    return data


def sequence(data: object, path: str) -> list[object]:
    """A list (a YAML sequence)."""
    if not isinstance(data, list):
        raise ConfigError(path, f"must be a list, got {_kind(data)}")
    return data


def integer(data: object, path: str, *, minimum: int, maximum: int | None = None) -> int:
    """An integer in ``minimum..maximum`` (no upper bound when ``maximum`` is None)."""
    in_range = isinstance(data, int) and not isinstance(data, bool) and data >= minimum
    if in_range and maximum is not None:
        in_range = data <= maximum  # type: ignore[operator]
    if not in_range:
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(path, f"must be an integer {bounds}, got {data!r:.60}")
    assert isinstance(data, int)
    return data


def number(
    data: object,
    path: str,
    *,
    minimum: float,
    maximum: float = math.inf,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """A finite int or float within the bounds."""
    if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
        raise ConfigError(path, f"must be a number, got {data!r:.60}")
    value = float(data)
    low_ok = value > minimum if exclusive_minimum else value >= minimum
    high_ok = value < maximum if exclusive_maximum else value <= maximum
    if not (low_ok and high_ok):
        low = f"{'>' if exclusive_minimum else '>='} {minimum:g}"
        high = (
            f" and {'<' if exclusive_maximum else '<='} {maximum:g}" if maximum < math.inf else ""
        )
        raise ConfigError(path, f"must be a number {low}{high}, got {data!r}")
    return value


def boolean(data: object, path: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(data, bool):
        raise ConfigError(path, f"must be true or false, got {data!r:.60}")
    return data


def string(data: object, path: str) -> str:
    """A non-empty string."""
    if not isinstance(data, str) or not data.strip():
        raise ConfigError(path, f"must be a non-empty string, got {data!r:.60}")
    return data


def choice(data: object, path: str, options: Iterable[str]) -> str:
    """One of ``options``."""
    options = tuple(options)
    if not isinstance(data, str) or data not in options:
        raise ConfigError(path, f"must be one of {', '.join(options)}, got {data!r:.60}")
    return data


def address(data: object, path: str) -> str:
    """An EVM address, returned lowercase (mixed case must carry a valid EIP-55 checksum)."""
    try:
        return canonical_address(data)
    except InvalidAddress as exc:
        raise ConfigError(path, exc.reason) from None


def amount(data: object, path: str) -> int:
    """A base-unit amount: a decimal integer (string or YAML int, ``_`` separators allowed)
    or one of the words ``max``/``uint256max``, ``uint160max``, ``uint96max``."""
    value: int | None = None
    if isinstance(data, int) and not isinstance(data, bool):
        value = data
    elif isinstance(data, str) and data in NAMED_AMOUNTS:
        value = NAMED_AMOUNTS[data]
    elif isinstance(data, str) and _DIGITS.fullmatch(data):
        value = int(data.replace("_", ""))
    if value is None or not 0 <= value <= UINT256_MAX:
        raise ConfigError(
            path,
            "must be a whole number of base units 0..2^256-1 (a string of digits)"
            f" or one of {', '.join(NAMED_AMOUNTS)}, got {data!r:.60}",
        )
    return value


def usd_price(data: object, path: str) -> Decimal:
    """A non-negative decimal price, best written as a string (``"3521.48"``)."""
    text = str(data) if isinstance(data, int | float) and not isinstance(data, bool) else data
    try:
        value = Decimal(text) if isinstance(text, str) else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0:
        raise ConfigError(
            path, f'must be a non-negative decimal such as "3521.48", got {data!r:.60}'
        )
    return value


def _kind(data: object) -> str:
    if data is None:
        return "nothing"
    if isinstance(data, Mapping):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    return type(data).__name__
