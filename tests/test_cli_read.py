"""findings, history, snapshot, diff and db prune through the command line, on SQLite
databases built by real polls of the simulator: what they say when history is empty or
young, labels, and the positions table."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import EXIT_CONFIG, EXIT_OK, EXIT_STORE, EXIT_UPSTREAM, main
from monitor.commands import history
from monitor.config import load_config
from monitor.domain.addresses import to_checksum
from tests.daemon_helpers import ROOT, simulator_process

OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
TREASURY = "0x5014ef5ed72014e90b82285ea7888b4a091409ec"
COLD = "0x02487d261e10ae9fc6c76e86bb80b0fac04676c4"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
READS = (["findings"], ["findings", "--all"], ["history"], ["snapshot"], ["diff", "--from", "1h"])


def write_config(tmp_path: Path, base_url: str, **api: Any) -> Path:
    doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    doc["api"].update(base_url=base_url, requests_per_second=100, **api)
    doc["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'monitor.sqlite'}"}
    doc["wallets"] = [{k: v for k, v in w.items() if k != "label"} if w["label"] == "cold" else w for w in doc["wallets"]]  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    """The example config against a fresh simulator and an empty SQLite file; the wallet
    labelled ``cold`` there has no label here."""
    with simulator_process() as base_url:
        yield write_config(tmp_path, base_url)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def poll(capsys: pytest.CaptureFixture[str], config: Path, times: int = 1) -> None:
    for _ in range(times):
        code, _, err = run(capsys, "once", "--config", str(config), "--format", "json")
        assert code == EXIT_OK, err


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def columns(lines: list[str]) -> list[list[str]]:
    """An aligned table split into cells: columns are where every line has a space."""
    width = max(len(line) for line in lines)
    padded = [line.ljust(width) for line in lines]
    blank = [all(line[i] == " " for line in padded) for i in range(width)]
    spans: list[tuple[int, int]] = []
    for i, is_blank in enumerate(blank):
        if not is_blank and (i == 0 or blank[i - 1]):
            spans.append((i, i))
        if not is_blank:
            spans[-1] = (spans[-1][0], i + 1)
    return [[line[a:b].strip() for a, b in spans] for line in padded]


# -- no polls: no answer -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_reads_of_a_database_without_polls_say_so_and_exit_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")  # never asked
    for command in READS:
        code, out, err = run(capsys, *command, "--config", str(config), "--format", fmt)
        assert code == EXIT_STORE, (command, out, err)
        assert out == "", command  # never "no open findings", "no changes" or an empty table
        assert f"no polls recorded in sqlite+aiosqlite:///{tmp_path / 'monitor.sqlite'} yet" in err


def test_reads_after_failed_polls_only_say_nothing_was_observed(
    tmp_path: Path, unused_tcp_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"http://127.0.0.1:{unused_tcp_port}", max_attempts=1)
    assert run(capsys, "once", "--config", str(config))[0] == EXIT_UPSTREAM
    for command in READS:
        code, out, err = run(capsys, *command, "--config", str(config))
        assert code == EXIT_STORE and out == "", (command, out, err)
        assert "no successful poll recorded in sqlite+aiosqlite:///" in err
        assert "(1 failed, nothing observed)" in err


# -- a young database: times before the first poll --------------------------------------------


def test_snapshot_before_the_first_poll_shows_the_first_poll_with_a_note(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    poll(capsys, config)
    for fmt in ("table", "json"):
        code, now_out, now_err = run(capsys, "snapshot", "--config", str(config), "--format", fmt)
        assert code == EXIT_OK and now_err == ""
        code, out, err = run(
            capsys, "snapshot", "--config", str(config), "--at", "2h", "--format", fmt
        )
        assert code == EXIT_OK, err
        assert out == now_out and out
        assert err.startswith("note: --at ") and err.count("\n") == 1
        assert "is before the first poll (poll 1, " in err and "showing the first poll" in err


def test_diff_from_before_the_first_poll_compares_from_the_first_poll(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    poll(capsys, config, times=3)  # the scenario's third poll grants ops' DAI to the router
    code, out, err = run(capsys, "diff", "--config", str(config), "--from", "24h", "--format", "json")  # fmt: skip
    assert code == EXIT_OK, err
    assert "note: --from " in err and "comparing from the first poll" in err
    changes = json_lines(out)
    assert any(
        (e["wallet"], e["token"], e["spender"], e["change"]) == (OPS, DAI, ROUTER, "granted")
        for e in changes
    )
    # Approvals standing since the first poll are not news: not reported as granted.
    assert not any(e["wallet"] == TREASURY and e["token"] == USDC for e in changes)
    code, first, _ = run(capsys, "history", "--config", str(config), "--format", "json")
    first_poll_at = json_lines(first)[0]["observed_at"]
    code, same, err = run(
        capsys, "diff", "--config", str(config), "--from", first_poll_at, "--format", "json"
    )
    assert code == EXIT_OK and err == "" and same == out

    code, out, err = run(capsys, "diff", "--config", str(config), "--from", "24h", "--to", "23h")
    assert code == EXIT_OK and out == "no changes\n"
    assert "note: --from " in err and "note: --to " in err


# -- db prune --dry-run ------------------------------------------------------------------------


def test_prune_dry_run_prints_what_prune_deletes_and_deletes_nothing(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    poll(capsys, config, times=4)
    later = datetime.now(UTC) + timedelta(days=2)  # every poll is then two days old
    settings = load_config(config)

    def prune(dry_run: bool) -> str:
        out = io.StringIO()
        asyncio.run(history.prune(settings, now=later, days=1, dry_run=dry_run, out=out))
        return out.getvalue()

    before = run(capsys, "history", "--config", str(config), "--format", "json")
    planned = prune(dry_run=True)
    assert planned.startswith("would prune 3 polls, ") and "(dry run: nothing deleted)" in planned
    assert run(capsys, "history", "--config", str(config), "--format", "json") == before
    done = prune(dry_run=False)
    assert done == "pruned " + planned.removeprefix("would prune ").replace(
        " (dry run: nothing deleted)", ""
    )
    assert run(capsys, "history", "--config", str(config), "--format", "json") != before
    assert run(capsys, "db", "check", "--config", str(config))[0] == EXIT_OK

    code, out, err = run(capsys, "db", "prune", "--config", str(config), "--dry-run")
    assert code == EXIT_OK and out.startswith("would prune 0 polls"), err


# -- labels ------------------------------------------------------------------------------------


def test_history_filters_take_a_label_or_an_address(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    poll(capsys, config, times=6)  # the scenario grants ops' DAI at poll 3, revokes it at 6
    by_address = run(capsys, "history", "--config", str(config), "--format", "json", "--wallet", to_checksum(OPS), "--spender", ROUTER)  # fmt: skip
    by_label = run(capsys, "history", "--config", str(config), "--format", "json", "--wallet", "ops", "--spender", "1inch Router v6")  # fmt: skip
    assert by_label == by_address and by_label[0] == EXIT_OK
    dai = [e["change"] for e in json_lines(by_label[1]) if e["token"] == DAI]
    assert dai == ["granted", "revoked"]

    # A spender label stands for that spender on every chain that labels it so.
    code, out, _ = run(capsys, "history", "--config", str(config), "--format", "json", "--spender", "1inch Router v6")  # fmt: skip
    assert {e["chain_id"] for e in json_lines(out)} == {1, 8453}
    assert {e["spender"] for e in json_lines(out)} == {ROUTER}

    code, out, _ = run(capsys, "history", "--config", str(config), "--wallet", "ops")
    assert code == EXIT_OK
    assert all("  ops (0xfcd6…cBa2)  " in line for line in out.splitlines())
    assert "DAI -> 1inch Router v6 (0x1111…2A65)  granted: 0 -> unlimited" in out

    code, out, err = run(capsys, "history", "--config", str(config), "--wallet", "Ops")
    assert code == EXIT_CONFIG and out == ""
    assert "--wallet: no wallet or label 'Ops' in the config" in err and "'ops'" in err
    code, _, err = run(capsys, "history", "--config", str(config), "--spender", "router")
    assert code == EXIT_CONFIG and "--spender: no spender or label 'router'" in err


def test_findings_name_labelled_wallets_and_spenders_with_their_addresses(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    poll(capsys, config)
    code, out, err = run(capsys, "findings", "--config", str(config))
    assert code == EXIT_OK, err
    assert any(
        "exploited_spender" in line
        and "ops (0xfcd6…cBa2) -> Furucombo (exploited) (0x17e8…Ca5f)" in line
        for line in out.splitlines()
    )


# -- the snapshot table is once's table ---------------------------------------------------------


def test_snapshot_table_applies_decimals_and_aligns_like_once(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, once_out, err = run(capsys, "once", "--config", str(config))
    assert code == EXIT_OK, err
    code, out, err = run(capsys, "snapshot", "--config", str(config))
    assert code == EXIT_OK, err
    title, *table = out.splitlines()
    assert title.startswith("snapshot of poll 1, observed ")
    once_table = once_out.split("\n\n")[0].splitlines()
    header, *rows = columns(table)
    assert header == columns(once_table)[0]
    assert all(len(row) == len(header) for row in rows)  # aligned: cells in the same columns
    cell = {name: i for i, name in enumerate(header)}

    treasury_usdc = [
        r for r in rows if r[cell["WALLET"]] == "treasury (0x5014…09Ec)" and r[1:3] == ["1", "USDC"]
    ]
    assert [r[cell["BALANCE"]] for r in treasury_usdc] == ["250,000"]  # decimals applied
    assert treasury_usdc[0][cell["SPENDER"]] == "1inch Router v6 (0x1111…2A65)"
    # The example has discovery on: the router's approval is read by 1inch and on-chain.
    assert treasury_usdc[0][cell["ALLOWANCE"] :] == ["unlimited", "yes", "1inch+chain"]
    cold = [r for r in rows if r[cell["WALLET"]] == to_checksum(COLD)]  # unlabelled: in full
    assert [r[cell["TOKEN"] :] for r in cold] == [["ETH", "-", "500", "n/a (native)", "-", "-"]]

    # Every approval the snapshot shows is the row once showed for it.
    def approvals(lines: list[list[str]]) -> set[tuple[str, ...]]:
        return {
            tuple(r[: cell["BALANCE"]] + r[cell["ALLOWANCE"] :])
            for r in lines
            if r[cell["SPENDER"]] != "-" and r[cell["ALLOWANCE"]] != "0"
        }

    assert approvals(rows) == approvals(columns(once_table)[1:]) != set()
