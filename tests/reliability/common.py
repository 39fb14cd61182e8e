"""Shared pieces of the reliability suite: scenarios, configs, scrapes and the database."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from monitor.simulator.scenario import load_scenario
from tests.daemon_helpers import cli, free_port, get, metric_samples


def write_scenario(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, allow_unicode=False, width=10**6))
    return path


def daemon_config(
    tmp_path: Path,
    scenario: Path,
    base_url: str,
    *,
    database_url: str | None = None,
    **sections: dict[str, Any],
) -> tuple[Path, str]:
    """A daemon config watching ``scenario`` on ``base_url``; returns (path, metrics URL)."""
    doc = load_scenario(scenario).monitor_config(base_url)
    port = free_port()
    doc["metrics"] = {"listen": f"127.0.0.1:{port}"}
    doc["database"] = {
        "url": database_url or f"sqlite+aiosqlite:///{tmp_path / 'monitor.sqlite'}",
        "retention_days": None,
    }
    doc["poll"] = {"interval_s": 1, "jitter_s": 0}
    doc.setdefault("risk", {})["prices"] = {"enabled": False}
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, f"http://127.0.0.1:{port}"


def scrape(metrics_url: str) -> str:
    """``/metrics``, which must answer 200 promptly whatever upstream or the database do."""
    started = time.monotonic()
    status, text = get(metrics_url + "/metrics")
    elapsed = time.monotonic() - started
    assert status == 200, (status, text[:500])
    assert elapsed < 2, f"/metrics took {elapsed:.2f}s"
    return text


def value(text: str, name: str, **labels: str) -> float | None:
    found = [
        v
        for sample_labels, v in metric_samples(text, name)
        if all(sample_labels.get(k) == want for k, want in labels.items())
    ]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def failed_total(text: str) -> dict[str, float]:
    return {
        labels["reason"]: v
        for labels, v in metric_samples(text, "exposure_monitor_polls_failed_total")
    }


def db_check(config: Path) -> None:
    checked = cli("db", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def history(config: Path) -> list[dict[str, Any]]:
    """Every recorded change event, oldest first (``history --format json``)."""
    shown = cli("history", "--config", str(config), "--since", "3650d", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def sqlite_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
        return list(conn.execute(query).fetchall())
