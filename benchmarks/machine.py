"""What the figures were measured on: the machine, the software, the code."""

# ruff: noqa: S603, S607 - the processes started here are git and df

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from benchmarks.floor import PARSER
from benchmarks.processes import ROOT


class _Server(Protocol):
    def server_version(self) -> str: ...


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _filesystem(path: str) -> str:
    try:
        out = (
            subprocess.run(
                ["df", "-T", path],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.splitlines()[-1]
            .split()
        )
        return out[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def describe_machine(postgres: _Server | None) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres.server_version() if postgres is not None else None,
        "json_floor_parser": PARSER,
        "temp_filesystem": _filesystem(tempfile.gettempdir()),
        "load_at_start": load_average(),
    }


def load_average() -> str:
    """Other processes compete for the cores: say how busy the machine was."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def describe_code() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    dirty = git("status", "--porcelain", "--", "monitor", "migrations")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_files": len(dirty.splitlines()) if dirty else 0,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
