"""Issue 11, item 6, through the command line: ``once`` against a closed port took 1 min 36 s,
printed 51 lines and never named the host. Now the client's breaker gives up within seconds,
the host is named, the output is bounded and the key appears nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FAKE_KEY = "CanaryKeyDeadUpstream0123456789abcdef"


@pytest.mark.slow
def test_once_against_a_closed_port_gives_up_fast_names_the_host_and_hides_the_key(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    # The example's settings (1 request a second, 5 attempts with backoff, several spenders,
    # custom tokens: 17 batches), pointed at a port nothing listens on.
    doc["api"]["base_url"] = f"http://127.0.0.1:{unused_tcp_port}"
    doc["database"]["url"] = f"sqlite+aiosqlite:///{tmp_path / 'monitor.sqlite'}"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "ONEINCH_API_KEY": FAKE_KEY}
    env.pop("CREDENTIALS_DIRECTORY", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "once", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    elapsed_s = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert elapsed_s < 10, f"took {elapsed_s:.1f}s"
    assert f"http://127.0.0.1:{unused_tcp_port}" in done.stderr
    assert "connection refused" in done.stderr
    # batches that failed alike share a line: a few lines, not one (or three) per batch
    assert len(done.stderr.splitlines()) <= 5, done.stderr
    assert "batches not polled" in done.stderr
    # a poll that observed nothing claims nothing about positions
    assert "positions unknown" in done.stdout
    assert "no positions" not in done.stdout and "nothing held" not in done.stdout
    assert FAKE_KEY not in done.stdout
    assert FAKE_KEY not in done.stderr
