"""The 1inch API key: read from the environment or a systemd credential, never from YAML.

The key lives in an ``ApiKey`` whose ``str`` and ``repr`` are masked, so it cannot leak
through a log line, an f-string or a traceback's locals by accident. Only the HTTP client
calls ``reveal()``, to build the ``Authorization`` header.

The form of a 1inch key is not documented (1inch's OpenAPI files and docs say only that it
is sent as ``Authorization: Bearer <key>``). So the checks here are conservative: any key
must be printable ASCII without whitespace or quotes (it goes into an HTTP header as it is);
a key for the real 1inch API must also be of a plausible length (16 to 512 characters: a
bound on paste accidents, not a documented rule). No check ever echoes the key: errors name
where it came from instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from monitor.errors import ConfigError

ENV_VAR = "ONEINCH_API_KEY"
CREDENTIAL_NAME = "oneinch_api_key"
ONEINCH_API_HOSTS = frozenset({"api.1inch.dev", "api.1inch.com"})
"""Hosts of the real 1inch API: it answers nothing without a key."""
ONEINCH_KEY_MIN_LENGTH = 16
ONEINCH_KEY_MAX_LENGTH = 512


class ApiKey:
    """A secret string that does not print itself. ``source`` says where it was read from
    (``environment variable ONEINCH_API_KEY``, ``credential file /run/…/oneinch_api_key``)."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, *, source: str = "given in code") -> None:
        self._value = value
        self.source = source

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


def is_oneinch_api(base_url: str) -> bool:
    """Whether ``base_url`` is the real 1inch API (any scheme, port or path), which needs a
    key; a simulator or any other host does not."""
    host = urlsplit(base_url).hostname or ""
    return host.rstrip(".").lower() in ONEINCH_API_HOSTS


def key_form_problem(value: str, *, oneinch_api: bool = False) -> str | None:
    """What is wrong with the form of the key ``value`` (already stripped), or None.

    The answer never contains the key or any part of it.
    """
    if not value:
        return "the API key is empty"
    if value[:1] in "\"'" and value[-1:] == value[:1]:
        return "the API key is wrapped in quotes: give the key alone"
    if value.lower().startswith("bearer") and any(ch.isspace() for ch in value):
        return "the API key starts with 'Bearer': give the key alone (the client adds it)"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return "the API key contains whitespace or control characters"
    if not value.isascii():
        return "the API key contains characters outside printable ASCII"
    if any(ch in "\"'" for ch in value):
        return "the API key contains a quote character"
    if oneinch_api and not ONEINCH_KEY_MIN_LENGTH <= len(value) <= ONEINCH_KEY_MAX_LENGTH:
        return (
            f"the API key is {len(value)} characters long, not a plausible 1inch key "
            f"({ONEINCH_KEY_MIN_LENGTH} to {ONEINCH_KEY_MAX_LENGTH}): was it cut short or "
            "pasted together with something else?"
        )
    return None


def _validated(value: str, source: str, oneinch_api: bool) -> ApiKey:
    value = value.strip()
    problem = key_form_problem(value, oneinch_api=oneinch_api)
    if problem is not None:
        # Never echo the value: it is a secret even when malformed.
        raise ConfigError(source, problem)
    return ApiKey(value, source=source)


def read_credential(path: Path, origin: str) -> str:
    """The text of a systemd credential file; a ``ConfigError`` naming ``origin`` (never the
    text: it is a secret) when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(origin, f"cannot read {path}: {type(exc).__name__}") from None


def load_api_key(
    environ: Mapping[str, str] | None = None, *, base_url: str | None = None
) -> ApiKey | None:
    """Return the API key, or None when none is configured (fine against the simulator).

    Order: the systemd credential ``$CREDENTIALS_DIRECTORY/oneinch_api_key`` (set by
    ``LoadCredential=``), then the ``ONEINCH_API_KEY`` environment variable. A key of the
    wrong form is a ``ConfigError`` naming its source; when ``base_url`` is the real 1inch
    API, its length is checked too.
    """
    env = os.environ if environ is None else environ
    oneinch_api = base_url is not None and is_oneinch_api(base_url)
    credentials_dir = env.get("CREDENTIALS_DIRECTORY")
    if credentials_dir:
        path = Path(credentials_dir) / CREDENTIAL_NAME
        if path.is_file():
            source = f"credential file {path}"
            return _validated(read_credential(path, source), source, oneinch_api)
    value = env.get(ENV_VAR)
    if value is not None:
        return _validated(value, f"environment variable {ENV_VAR}", oneinch_api)
    return None
