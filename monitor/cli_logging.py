"""Logging for the command line: levels per command, text or JSON lines on stderr.

The service commands (``run``, ``demo``) log at info by default: that they listen and one
line per poll. One-shot commands stay quiet (warning). Whatever the level asked for, other
libraries' loggers (APScheduler, alembic, aiohttp, ...) stay at warning unless it is debug:
their info lines are chatter for whoever is not debugging them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
SERVICE_COMMANDS = frozenset({"run", "demo"})
PACKAGE_LOGGER = "monitor"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_level(command: str) -> str:
    """The level a command logs at when ``--log-level`` is not given."""
    return "info" if command in SERVICE_COMMANDS else "warning"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record and line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, and ``exc_info`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


@contextlib.contextmanager
def configured_logging(
    *, command: str, level: str | None, fmt: str, stream: TextIO
) -> Iterator[None]:
    """Log to ``stream`` while one command runs, then put logging back as it was found (so
    that ``main()`` called in-process, as the tests do, leaves no handler behind)."""
    asked = logging.getLevelName((level or default_level(command)).upper())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLinesFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    package = logging.getLogger(PACKAGE_LOGGER)
    saved_levels = (root.level, package.level)
    root.addHandler(handler)
    root.setLevel(asked if asked == logging.DEBUG else max(asked, logging.WARNING))
    package.setLevel(asked)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_levels[0])
        package.setLevel(saved_levels[1])
