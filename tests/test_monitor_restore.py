"""A restarted daemon publishes what earlier runs recorded: the last poll, the findings and
the last day's changes, before its own first poll."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from monitor.cli import EXIT_OK, main
from monitor.config import load_config
from monitor.daemon.metrics import Instruments
from monitor.daemon.poll_cycle import build_monitor
from monitor.runtime import open_client, open_store
from tests.daemon_helpers import ROOT, simulator_process


@pytest.fixture
def recorded_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A config whose database holds six polls of the default scenario (the DAI grant at
    the third, the revoke at the sixth)."""
    with simulator_process() as base_url:
        doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
        doc["api"].update(base_url=base_url, requests_per_second=100)
        doc["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite'}"}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        for _ in range(6):
            assert main(["once", "--config", str(path)]) == EXIT_OK, capsys.readouterr().err
    capsys.readouterr()
    return path


async def test_restore_publishes_the_last_poll_and_the_days_changes(recorded_config: Path) -> None:
    config = load_config(recorded_config)
    async with open_store(config) as store, open_client(config, None) as client:
        last = await store.last_poll()
        monitor = build_monitor(
            config,
            client=client,
            store=store,
            instruments=Instruments(CollectorRegistry(), version="test"),
            clock=lambda: datetime.now(UTC),
        )
        assert monitor.view.last_poll_at is None
        await monitor.restore()
    view = monitor.view
    assert last is not None
    assert (view.last_poll_at, view.last_poll_outcome) == (last[0], "ok")
    assert view.findings and view.newest_success() is not None
    changes = [(e.event.token, e.event.change.value) for e in view.recent_changes]
    dai = "0x6b175474e89094c44da98b954eedeac495271d0f"
    # newest first; the first poll's baseline is not a change
    assert changes.index((dai, "revoked")) < changes.index((dai, "granted"))
    assert all(e.poll_id > 1 for e in view.recent_changes)
