"""The 1inch API key: read from the environment or a systemd credential, never from YAML.

The key lives in an ``ApiKey`` whose ``str`` and ``repr`` are masked, so it cannot leak
through a log line, an f-string or a traceback's locals by accident. Only the HTTP client
calls ``reveal()``, to build the ``Authorization`` header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from monitor.errors import ConfigError

ENV_VAR = "ONEINCH_API_KEY"
CREDENTIAL_NAME = "oneinch_api_key"


class ApiKey:
    """A secret string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("ApiKey", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an ApiKey is not to be pickled")


def _validated(value: str, where: str) -> ApiKey:
    value = value.strip()
    if not value:
        raise ConfigError(where, "the API key is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        # Never echo the value: it is a secret even when malformed.
        raise ConfigError(where, "the API key contains whitespace or control characters")
    return ApiKey(value)


def load_api_key(environ: Mapping[str, str] | None = None) -> ApiKey | None:
    """Return the API key, or None when none is configured (fine against the simulator).

    Order: the systemd credential ``$CREDENTIALS_DIRECTORY/oneinch_api_key`` (set by
    ``LoadCredential=``), then the ``ONEINCH_API_KEY`` environment variable.
    """
    env = os.environ if environ is None else environ
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    if credentials_dir:
        path = Path(credentials_dir) / CREDENTIAL_NAME
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"credential {CREDENTIAL_NAME}", f"cannot read {path}: {type(exc).__name__}"
                ) from None
            return _validated(text, f"credential {CREDENTIAL_NAME}")
    value = env.get(ENV_VAR)
    if value is not None:
        return _validated(value, f"environment variable {ENV_VAR}")
    return None
