"""once, history, snapshot, diff and findings through the command line, on a real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.cli import EXIT_CONFIG, EXIT_OK, EXIT_STORE, main
from tests.daemon_helpers import ROOT, simulator_process

OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
EVENT_FIELDS = {"observed_at", "chain_id", "wallet", "token", "spender", "change", "old", "new"}


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Iterator[Path]:
    with simulator_process() as base_url:
        doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
        doc["api"].update(base_url=base_url, requests_per_second=100)
        doc["database"] = {"url": database_url}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        yield path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_once_records_and_history_shows_the_grant_and_the_revoke(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first_changes: list[dict[str, object]] = []
    for poll in range(1, 7):
        code, out, err = run(
            capsys, "once", "--config", str(config), "--changes", "--format", "json"
        )
        assert code == EXIT_OK, err
        if poll == 1:
            first_changes = json_lines(out)
    assert first_changes and all(set(e) >= EVENT_FIELDS for e in first_changes)

    code, out, _ = run(
        capsys,
        "history",
        "--config",
        str(config),
        "--format",
        "json",
        "--wallet",
        OPS,
        "--spender",
        ROUTER,
    )
    assert code == EXIT_OK
    dai = [e for e in json_lines(out) if e["token"] == DAI and e["spender"] == ROUTER]
    assert [(e["change"], e["old"], e["new"]) for e in dai] == [
        ("granted", "0", str(2**256 - 1)),  # scenario poll 3
        ("revoked", str(2**256 - 1), "0"),  # scenario poll 6
    ]
    assert all(str(e["observed_at"]).endswith("Z") for e in dai)
    granted_at, revoked_at = str(dai[0]["observed_at"]), str(dai[1]["observed_at"])

    code, out, _ = run(
        capsys, "snapshot", "--config", str(config), "--at", granted_at, "--format", "json"
    )
    assert code == EXIT_OK
    rows = json_lines(out)
    assert {
        "chain_id",
        "wallet",
        "token",
        "symbol",
        "decimals",
        "spender",
        "balance",
        "allowance",
        "unlimited",
    } <= set(rows[0])
    assert any(
        r["wallet"] == OPS and r["token"] == DAI and r["spender"] == ROUTER and r["unlimited"]
        for r in rows
    )
    code, out, _ = run(
        capsys, "snapshot", "--config", str(config), "--at", revoked_at, "--format", "json"
    )
    assert not any(
        r["wallet"] == OPS and r["token"] == DAI and r["spender"] == ROUTER for r in json_lines(out)
    )

    code, out, _ = run(
        capsys,
        "diff",
        "--config",
        str(config),
        "--from",
        granted_at,
        "--to",
        revoked_at,
        "--format",
        "json",
    )
    assert code == EXIT_OK
    assert any(e["token"] == DAI and e["change"] == "revoked" for e in json_lines(out))
    code, out, _ = run(capsys, "diff", "--config", str(config), "--from", revoked_at, "--to", "now")
    assert "no changes" in out

    code, out, _ = run(
        capsys, "history", "--config", str(config), "--since", "1h", "--chain", "8453"
    )
    assert code == EXIT_OK and "chain 8453" in out and "chain 1 " not in out


def test_time_and_address_options_are_checked(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "snapshot", "--config", str(config), "--at", "yesterday")
    assert code == EXIT_CONFIG and "--at: not a time" in err
    code, _, err = run(capsys, "history", "--config", str(config), "--wallet", "0x1234")
    assert code == EXIT_CONFIG and "--wallet: not a valid address" in err


def test_snapshot_before_any_poll_is_a_store_error(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "snapshot", "--config", str(config))
    assert code == EXIT_STORE and "no polls recorded in " in err and out == ""


def test_db_prune_keeps_recent_history(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "once", "--config", str(config))[0] == EXIT_OK
    code, out, _ = run(capsys, "db", "prune", "--config", str(config), "--days", "1")
    assert code == EXIT_OK and "pruned 0 polls" in out
    assert run(capsys, "db", "check", "--config", str(config))[0] == EXIT_OK
