"""The status page in a real browser: headless Chromium loads ``/`` and the test reads the DOM
it ends up with (``--dump-dom``: after the page's own scripts, had any run) and what a person
would read in it.

Chromium is required (Debian's ``chromium`` package at /usr/bin/chromium; ``scripts/tools``
installs it when run as root, as CI does): without it these tests fail, they never skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from monitor.chain.source import ChainStatus
from monitor.daemon.http import make_app
from monitor.daemon.metrics import render_state
from monitor.daemon.view import MonitorView
from monitor.domain.addresses import to_checksum
from monitor.domain.model import Token
from monitor.domain.snapshot import Snapshot
from monitor.risk.model import RuleName, Severity
from monitor.simulator.faults import ENDPOINTS
from monitor.timespec import iso
from tests.daemon_helpers import (
    add_fault,
    daemon_process,
    get,
    metric_samples,
    metric_value,
    simulator_process,
    wait_for,
    write_config,
)
from tests.test_status_page import (
    EVIL,
    HOSTILE_SYMBOL,
    NOW,
    ROUTER,
    TOKENS,
    TREASURY,
    USDC,
    finding,
    view,
    visible_text,
)

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
IMG = "0x" + "04" * 20
HOSTILE_IMG = "<img src=x onerror=document.title=3>"


def chromium() -> str:
    found = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None:
        pytest.fail(
            "chromium not found: the status page's browser tests need Debian's chromium "
            "package. scripts/tools installs it when run as root (as CI does); otherwise run "
            "`sudo apt-get install chromium`. These tests never skip.",
            pytrace=False,
        )
    return found


async def browse(url: str, profile: Path, *extra: str) -> str:
    """Chromium's stdout after loading ``url`` with ``extra`` flags (``--dump-dom``: the DOM)."""
    process = await asyncio.create_subprocess_exec(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *extra,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


class Dom(HTMLParser):
    """What the test looks at in a dumped DOM: elements by tag, links, metas, the title."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.links: list[dict[str, str | None]] = []
        self.metas: list[dict[str, str | None]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "a":
            self.links.append(dict(attrs))
        elif tag == "meta":
            self.metas.append(dict(attrs))
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def parse(dom: str) -> Dom:
    parsed = Dom()
    parsed.feed(dom)
    parsed.close()
    return parsed


def hostile_view() -> MonitorView:
    """``tests.test_status_page.view`` plus a token whose symbol is an ``<img onerror>``."""
    base = view()
    tokens = {
        **TOKENS,
        (1, IMG): Token(chain_id=1, address=IMG, symbol=HOSTILE_IMG, name="", decimals=0),
    }
    allowances = {**base.snapshot.allowances, (1, TREASURY, IMG, ROUTER): 7}
    extra = finding(RuleName.UNTRUSTED_SPENDER, Severity.WARNING, token=IMG)
    return replace(
        base,
        tokens=tokens,
        snapshot=Snapshot(allowances=allowances, balances=base.snapshot.balances),
        findings=(*base.findings, extra),
    )  # fmt: skip


async def test_a_person_sees_the_status_page_in_chromium(tmp_path: Path) -> None:
    # The USDC approval is read by 1inch and was discovered in the chain's logs too, approved
    # three hours ago; a first scan of Ethereum's logs is a quarter done.
    v = replace(
        hostile_view(),
        oneinch_spenders=frozenset({(1, ROUTER)}),
        discovered=frozenset({(1, TREASURY, USDC, ROUTER)}),
        approved_at={(1, TREASURY, USDC, ROUTER): NOW - timedelta(hours=3)},
    )
    scan = ChainStatus(
        chain_id=1,
        endpoint="https://eth-mainnet.example.com",
        head_block=21_000_000,
        scanning=True,
        scan_done_blocks=250_000,
        scan_total_blocks=1_000_000,
        scan_eta_s=5400.0,
        pairs=3,
        unreadable=1,
    )
    app = make_app(
        registry=CollectorRegistry(),
        view=lambda: v,
        state_text=lambda: render_state(v, max_position_series=10, max_finding_series=10).text,
        clock=lambda: NOW,
        ready_max_age_s=900,
        discovery=lambda: (scan,),
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/"))
        dom_text = await browse(url, tmp_path / "profile", "--dump-dom")
        shot = tmp_path / "status.png"
        await browse(url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,1600")
    finally:
        await server.close()

    dom = parse(dom_text)
    text = visible_text(dom_text)
    # Hostile symbols did not run: no script or image element, the title is the page's own,
    # and the symbols are there to read, as the text they are.
    assert dom.title == "exposure-monitor: 3 open findings"
    assert "script" not in dom.tags
    assert "img" not in dom.tags
    assert HOSTILE_SYMBOL in text
    assert HOSTILE_IMG in text
    # Chain names beside ids; the labelled wallet with its short address, the full one on
    # hover, a link to the explorer.
    assert "Ethereum (1)" in text
    assert "Arbitrum (42161)" in text
    treasury, router, usdc = to_checksum(TREASURY), to_checksum(ROUTER), to_checksum(USDC)
    assert f"treasury ({treasury[:6]}…{treasury[-4:]})" in text
    wallet_link = {"href": f"https://etherscan.io/address/{treasury}", "title": treasury}
    assert any(wallet_link.items() <= link.items() for link in dom.links)
    # What revokes the unlimited approval: the call, on the token contract it goes to.
    assert f"send approve({router}, 0) to the USDC {usdc[:6]}…{usdc[-4:]} contract" in text
    assert any(link.get("href") == f"https://etherscan.io/address/{usdc}" for link in dom.links)
    # Three open findings; the suppressed one is apart, with its reason.
    assert "Open findings 3 1 critical · 2 warning; 1 suppressed" in text
    assert "Open findings (3)" in text
    assert "Suppressed findings (1)" in text
    assert "audited vault, ticket SEC-12" in text
    # The last day's changes in whole tokens; no row for the revoked spender.
    assert "Changes in the last 24 hours (3)" in text
    assert "became unlimited 5 unlimited" in text
    assert "balance changed 0 1,234.5" in text
    assert "$0.00" not in text
    assert "Value at risk $2,500.00" in text
    assert any(m.get("http-equiv") == "refresh" and m.get("content") == "300" for m in dom.metas)
    assert to_checksum(EVIL)[:6] in text
    # Where each approval is read, and when the discovered one was approved.
    assert "Approvals (4)" in text
    assert "unlimited 1inch+chain 3 h ago 2026-11-24T09:00:00Z" in text
    # The first scan's progress, and the endpoint as scheme://host only.
    assert "250,000 of 1,000,000 blocks (25%) ETA 90 min" in text
    assert "https://eth-mainnet.example.com scanning" in text
    assert shot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(180)
def test_after_a_restart_the_page_shows_the_restored_last_poll(tmp_path: Path) -> None:
    """Right after a restart, before its first poll ends, the page agrees with /readyz."""
    with simulator_process() as base_url:
        config, metrics_url = write_config(
            tmp_path / "config.yaml",
            base_url,
            api={"max_attempts": 1},
            poll={"interval_s": 60, "shutdown_grace_s": 2},
        )
        with daemon_process(config) as daemon:
            wait_for(lambda: get(metrics_url + "/readyz")[0] == 200, 30, "ready")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0
        # Every balance answer now hangs past the client's timeout: the restarted daemon's
        # first poll is still running while the page is read. (Prices still answer: restoring
        # the state values it before the first poll starts.)
        for endpoint in ENDPOINTS:
            if endpoint not in ("price", "any"):
                add_fault(base_url, endpoint=endpoint, body="ok", delay_s=120)
        with daemon_process(config, log=tmp_path / "restarted.log") as daemon:
            # The listener answers before the stored state is loaded: wait for the state.
            wait_for(
                lambda: metric_value(metrics_url, "exposure_monitor_state_loaded") == 1,
                30,
                "the stored state",
            )
            started = time.monotonic()
            status, ready = get(metrics_url + "/readyz")
            assert status == 200, ready
            _, metrics = get(metrics_url + "/metrics")
            dom_text = asyncio.run(browse(metrics_url + "/", tmp_path / "profile", "--dump-dom"))
            assert time.monotonic() - started < 25, "the first poll may have ended meanwhile"
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0
    stamps = metric_samples(metrics, "exposure_monitor_last_successful_poll_timestamp_seconds")
    newest = datetime.fromtimestamp(max(value for _, value in stamps), tz=UTC)
    text = visible_text(dom_text)
    assert "no poll" not in text.lower()
    assert "Last poll none yet" not in text
    assert iso(newest)[:19] in text  # to the second: the exposition's float may round
