"""``once`` records a poll exactly as the daemon does: findings, the configured threshold, and
no claim about positions it does not know."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from monitor.cli import EXIT_OK, EXIT_UPSTREAM, main
from tests.daemon_helpers import ROOT, simulator_process

WALLET = "0x5014ef5ed72014e90b82285ea7888b4a091409ec"
TOKEN = "0x6b175474e89094c44da98b954eedeac495271d0f"
SPENDER = "0x111111125421ca6dc452d289314280a0f8842a65"
FURUCOMBO = "0x17e8ca1b4798b97602895f63206afcd1fc90ca5f"

SCENARIO = f"""
description: a finite approval raised past a low configured threshold at poll 2
chains:
  - id: 1
    tokens:
      - {{address: "{TOKEN}", symbol: DAI, name: Dai, decimals: 18, usd_price: "1.00"}}
wallets:
  - {{address: "{WALLET}", label: treasury}}
spenders:
  - {{chain: 1, address: "{SPENDER}", label: router, trusted: true}}
balances:
  - {{chain: 1, wallet: "{WALLET}", token: "{TOKEN}", amount: "7"}}
allowances:
  - {{chain: 1, wallet: "{WALLET}", token: "{TOKEN}", spender: "{SPENDER}", amount: "10"}}
timeline:
  - at_poll: 2
    set_allowance: {{chain: 1, wallet: "{WALLET}", token: "{TOKEN}", spender: "{SPENDER}", amount: "5000"}}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def example_config(tmp_path: Path) -> Iterator[Path]:
    with simulator_process() as base_url:
        doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
        doc["api"].update(base_url=base_url, requests_per_second=100)
        doc["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'once.sqlite'}"}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        yield path


def test_findings_after_once_lists_what_the_daemon_would(
    example_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "once", "--config", str(example_config))
    assert code == EXIT_OK, err
    assert "open findings" in out

    code, out, err = run(capsys, "findings", "--config", str(example_config), "--format", "json")
    assert code == EXIT_OK, err
    found = json_lines(out)
    rules = {(f["rule"], f["spender"]) for f in found}
    assert ("exploited_spender", FURUCOMBO) in rules
    assert ("unlimited_approval", SPENDER) in rules
    assert "no open findings" not in out


def test_configured_threshold_decides_unlimited_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO)
    with simulator_process(scenario) as base_url:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "api": {"base_url": base_url, "requests_per_second": 100},
                    "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"},
                    "wallets": [{"address": WALLET, "label": "treasury"}],
                    "chains": [{"id": 1, "spenders": [{"address": SPENDER, "trusted": True}]}],
                    "risk": {"unlimited_threshold": 1000, "prices": {"enabled": False}},
                }
            )
        )
        code, out, err = run(capsys, "once", "--config", str(config), "--format", "json")
        assert code == EXIT_OK, err
        assert [p["unlimited"] for p in json_lines(out)] == [False]

        code, out, err = run(
            capsys, "once", "--config", str(config), "--changes", "--format", "json"
        )
        assert code == EXIT_OK, err
        changes = json_lines(out)
        assert [(c["change"], c["old"], c["new"]) for c in changes] == [
            ("became_unlimited", "10", "5000")
        ]

        code, out, err = run(capsys, "once", "--config", str(config), "--format", "json")
        assert [p["unlimited"] for p in json_lines(out)] == [True]
        code, out, err = run(capsys, "once", "--config", str(config))
        assert "unlimited" in out.split("changes recorded")[0]

    code, out, _ = run(capsys, "history", "--config", str(config))
    assert "became_unlimited" in out and "-> unlimited" in out

    code, out, _ = run(capsys, "findings", "--config", str(config), "--format", "json")
    # unlimited at 1000, and freshly so: the rise to 5000 is a recent became_unlimited
    assert sorted(f["rule"] for f in json_lines(out)) == ["fresh_approval", "unlimited_approval"]


def test_a_failed_poll_claims_nothing_about_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    doc["api"].update(base_url=f"http://127.0.0.1:{port}", requests_per_second=100)
    doc["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'dead.sqlite'}"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc))

    code, out, err = run(capsys, "once", "--config", str(config))
    assert code == EXIT_UPSTREAM
    assert "no positions" not in out and "nothing held" not in out
    assert "positions unknown" in out
    assert f"127.0.0.1:{port}" in err

    code, out, _ = run(capsys, "once", "--config", str(config), "--changes")
    assert code == EXIT_UPSTREAM
    assert "no changes" not in out.replace("no batch answered: changes unknown", "")


def test_once_changes_with_nothing_changed_says_so(
    example_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "once", "--config", str(example_config))[0] == EXIT_OK
    code, out, err = run(capsys, "once", "--config", str(example_config), "--changes")
    assert code == EXIT_OK, err
    assert out == "no changes\n"


@pytest.mark.slow
def test_progress_is_drawn_on_a_terminal_and_never_into_a_pipe(example_config: Path) -> None:
    command = [sys.executable, "-m", "monitor", "once", "--config", str(example_config)]
    piped = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert piped.returncode == EXIT_OK, piped.stderr
    assert "batch" not in piped.stderr and "\r" not in piped.stderr

    primary, secondary = pty.openpty()
    # a terminal of 100 columns (a new pty has none, and the bar would be cut to nothing)
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL
    ) as proc:
        os.close(secondary)
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
        assert proc.wait(timeout=60) == EXIT_OK
    os.close(primary)
    text = drawn.decode(errors="replace")
    # tqdm's bar: batches done of total, and an ETA ("<" before the remaining time)
    assert re.search(r"polling.*\d+/(\d+) \[", text), text
    counts = [(int(done), int(total)) for done, total in re.findall(r"(\d+)/(\d+) \[", text)]
    assert counts[0][0] == 0 and any(done > 0 for done, _ in counts)
    assert len({total for _, total in counts}) == 1 and "batch" in text
