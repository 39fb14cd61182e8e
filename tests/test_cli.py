"""The command line as users drive it: exit codes, output formats, real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from monitor.cli import EXIT_CONFIG, EXIT_LISTEN, EXIT_OK, EXIT_UPSTREAM, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
JSON_FIELDS = {
    "chain_id",
    "wallet",
    "token",
    "symbol",
    "decimals",
    "spender",
    "balance",
    "allowance",
    "unlimited",
    "source",
}


def test_check_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(EXAMPLE)]) == EXIT_OK
    assert "ok (3 wallets, 2 chains, 5 spenders)" in capsys.readouterr().out


def test_check_reports_one_line_with_the_yaml_path_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["chains"][0]["spenders"][2]["address"] = "0x161b1dFB96298624a40C7D1E1948cd75045E5ABA"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["check", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "chains[0].spenders[2].address: bad EIP-55 checksum" in err


def test_check_refuses_a_malformed_key_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ONEINCH_API_KEY", "two words")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check", "--config", str(EXAMPLE)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "ONEINCH_API_KEY" in err and "two words" not in err


def test_once_demo_prints_a_table_with_unlimited_approvals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["once", "--demo"]) == EXIT_OK
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == [
        "WALLET",
        "CHAIN",
        "TOKEN",
        "SPENDER",
        "BALANCE",
        "ALLOWANCE",
        "UNLIMITED",
        "SOURCE",
    ]
    # A labelled wallet or spender shows as "label (0x1234…abcd)"; a balance once per wallet,
    # chain and token, on the group's first row, whatever the number of spenders.
    treasury_usdc = [
        r
        for r in rows
        if r.startswith("treasury (0x5014…09Ec) ") and r.split()[2:4] == ["1", "USDC"]
    ]
    assert len(treasury_usdc) == 4 and "250,000" in treasury_usdc[0]
    assert sum("250,000" in r for r in treasury_usdc) == 1
    assert any(
        "1inch Router v6 (0x1111…2A65)" in r
        and re.search(r"unlimited  yes\s+1inch\+chain$", r.rstrip())
        for r in treasury_usdc
    )
    # Discovery: an unlimited WETH approval to an exploited contract nobody configured.
    assert any(
        "0x8dFEB86C7C962577deD19AB2050AC78654feA9F7" in r
        and re.search(r"unlimited  yes\s+chain$", r.rstrip())
        for r in rows
    )
    assert any("n/a (native)" in r for r in rows)
    assert any(
        "1,000" in r and " DAI " in r and re.search(r" no\s+1inch\+chain$", r.rstrip())
        for r in rows
    )


def test_once_demo_json_lines_have_the_documented_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["once", "--demo", "--format", "json"]) == EXIT_OK
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows
    for row in rows:
        assert set(row) >= JSON_FIELDS
        assert isinstance(row["balance"], str) and row["balance"].isdigit()
        assert isinstance(row["allowance"], str) and row["allowance"].isdigit()
        assert row["wallet"] == row["wallet"].lower()
    assert any(row["allowance"] == str(2**256 - 1) and row["unlimited"] for row in rows)
    assert any(row["allowance"] == str(2**96 - 1) and row["unlimited"] for row in rows)
    assert not any(row["native"] and row["unlimited"] for row in rows)


def test_once_exits_3_and_names_the_failure_when_upstream_is_down(
    tmp_path: Path, unused_tcp_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["api"].update(
        base_url=f"http://127.0.0.1:{unused_tcp_port}", max_attempts=1, requests_per_second=100
    )
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["once", "--config", str(path)]) == EXIT_UPSTREAM
    err = capsys.readouterr().err
    # batches that failed alike share one line, which names the host
    assert f"batches not polled: connection failed to http://127.0.0.1:{unused_tcp_port}" in err


def test_once_requires_a_config_or_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["once"])
    assert info.value.code == EXIT_CONFIG


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_python_m_monitor_and_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("exposure-monitor ")


@pytest.mark.slow
def test_simulate_serves_until_sigterm_and_once_polls_it(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "monitor", "simulate", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as sim:
        try:
            assert sim.stdout is not None
            line = sim.stdout.readline()
            assert line.startswith("simulator listening on http://127.0.0.1:")
            base_url = line.split()[-1]
            doc = yaml.safe_load(EXAMPLE.read_text())
            doc["api"]["base_url"] = base_url
            doc["api"]["requests_per_second"] = 50
            config = tmp_path / "c.yaml"
            config.write_text(yaml.safe_dump(doc))
            polled = _run(
                "once", "--config", str(config), "--format", "json",
                env={"ONEINCH_API_KEY": "sk-canary-cli"},
            )  # fmt: skip
            assert polled.returncode == 0, polled.stderr
            assert len(polled.stdout.splitlines()) > 10
            assert "sk-canary-cli" not in polled.stdout + polled.stderr
            started = time.monotonic()
            sim.send_signal(signal.SIGTERM)
            assert sim.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
        finally:
            if sim.poll() is None:
                sim.kill()
                sim.wait()


def test_simulate_print_config_is_a_valid_monitor_config(tmp_path: Path) -> None:
    result = _run("simulate", "--print-config", "--listen", "127.0.0.1:8911")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "printed.yaml"
    path.write_text(result.stdout)
    checked = _run("check", "--config", str(path))
    assert checked.returncode == 0, checked.stderr
    assert yaml.safe_load(result.stdout)["api"]["base_url"] == "http://127.0.0.1:8911"


def test_simulate_with_a_broken_scenario_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text("chains: [{id: 1, tokens: [{address: '0x12'}]}]\nwallets: []\n")
    result = _run("simulate", "--scenario", str(path))
    assert result.returncode == EXIT_CONFIG
    assert "chains[0].tokens[0]" in result.stderr


@pytest.mark.parametrize("command", ["run", "simulate", "demo"])
def test_a_port_in_use_is_one_line_and_exit_5_not_a_config_error(
    tmp_path: Path, command: str
) -> None:
    """Exit 5, not 2: the unit's RestartPreventExitStatus=2 must not keep the daemon down
    while its port is briefly held by another process."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if command == "run":
            doc = yaml.safe_load(EXAMPLE.read_text())
            doc["metrics"] = {"listen": f"127.0.0.1:{port}"}
            doc["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite'}"}
            config = tmp_path / "c.yaml"
            config.write_text(yaml.safe_dump(doc))
            result = _run("run", "--config", str(config))
            setting = "metrics.listen"
        else:
            extra = ["--dir", str(tmp_path)] if command == "demo" else []
            result = _run(command, "--listen", f"127.0.0.1:{port}", *extra)
            setting = "--listen"
    assert result.returncode == EXIT_LISTEN != EXIT_CONFIG
    assert result.stderr == (
        f"exposure-monitor: {setting}: cannot listen on 127.0.0.1:{port}: address already in use\n"
    )
