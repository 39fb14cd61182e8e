"""Arguments the command line refuses before touching the database: a reversed time range,
a retention below one day; and ``db prune --dry-run`` reaching prune."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.cli import EXIT_CONFIG, EXIT_OK, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite'}"}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_reversed_diff_range_is_a_usage_error_naming_both_options(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["diff", "--config", str(config), "--from", "1h", "--to", "2h"])
    out, err = capsys.readouterr()
    assert code == EXIT_CONFIG
    assert out == ""
    assert err.count("\n") == 1
    assert "--from 1h" in err and "is after --to 2h" in err
    assert not (config.parent / "m.sqlite").exists()  # refused before opening the database


def test_a_diff_range_in_order_is_accepted(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", "--config", str(config), "--from", "2h", "--to", "1h"]) != EXIT_CONFIG


@pytest.mark.parametrize("days", ["0", "-3"])
def test_prune_refuses_fewer_than_one_day(
    config: Path, days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "prune", "--config", str(config), "--days", days]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err == f"exposure-monitor: config error: --days: must be at least 1, got {days}\n"
    assert not (config.parent / "m.sqlite").exists()


def test_prune_dry_run_deletes_nothing(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "prune", "--config", str(config), "--days", "1", "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("would prune 0 polls") and "nothing deleted" in out
