"""Times given on the command line: ISO 8601, a duration ago (``24h``), or ``now``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_time(text: str, *, now: datetime) -> datetime:
    """``2026-11-24T10:00:00Z``, ``2026-11-24`` (midnight UTC), ``90m``/``24h``/``7d`` ago,
    or ``now``. A time without an offset is taken as UTC. Raises ``ValueError`` naming the
    text otherwise."""
    value = text.strip()
    if value == "now":
        return now
    match = _DURATION.fullmatch(value)
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use ISO 8601 such as 2026-11-24T10:00:00Z, "
            "a duration ago such as 24h or 7d, or now)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the microsecond when there is one."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
