"""``/metrics`` over HTTP: gzip from the compressed state, plain text for the rest, both the
same exposition; and the series caps counted by the poll cycle."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from base64 import b64encode
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import bcrypt
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import parse_config
from monitor.config.exploits import bundled_exploits
from monitor.daemon.http import accepts_gzip, make_app
from monitor.daemon.metrics import Instruments, RenderedState, StateText, render_state
from monitor.daemon.poll_cycle import Monitor
from monitor.daemon.view import MonitorView
from monitor.domain.model import UINT256_MAX, Token
from monitor.domain.snapshot import Snapshot
from monitor.risk.model import Finding, RuleName, Severity
from tests.test_metrics import MANY_FINDINGS, USDC, S, W, view

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
HASHED = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))


def big_view(wallets: int = 4_000) -> MonitorView:
    """Enough positions that the plain text takes several pieces to write."""
    tokens = {(1, USDC): Token(chain_id=1, address=USDC, symbol="USDC", name="", decimals=6)}
    addresses = [f"0x{i:040x}" for i in range(wallets)]
    return view(
        snapshot=Snapshot(
            allowances={(1, w, USDC, S): UINT256_MAX for w in addresses},
            balances={(1, w, USDC): 10**6 for w in addresses},
        ),
        tokens=tokens,
    )


def render(v: MonitorView) -> RenderedState:
    return render_state(v, max_position_series=100_000, max_finding_series=100_000)


@dataclass
class Served:
    session: ClientSession
    url: str
    registry: CollectorRegistry
    state: StateText


async def serve(
    state: StateText, users: Mapping[str, bytes] | None = None
) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    Instruments(registry, version="9.9.9").polls.inc(3)
    app = make_app(
        registry=registry,
        view=lambda: MonitorView(unlimited_threshold=2**96 - 1, poll_interval_s=300),
        state_text=lambda: state,
        clock=lambda: NOW,
        ready_max_age_s=900,
        users=users,
    )
    server = TestServer(app)
    await server.start_server()
    try:
        async with ClientSession(auto_decompress=False) as session:
            yield Served(session, str(server.make_url("/metrics")), registry, state)
    finally:
        await server.close()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for it in serve(render(big_view()).text):
        yield it


async def fetch(
    served: Served, headers: dict[str, str], method: str = "GET"
) -> tuple[int, Mapping[str, str], bytes]:
    """``headers`` and no others: aiohttp's default Accept-Encoding is not sent."""
    async with served.session.request(
        method, served.url, headers=headers, skip_auto_headers=["Accept-Encoding"]
    ) as response:
        return response.status, response.headers, await response.read()


async def test_gzip_scrape_is_the_plain_exposition_compressed(served: Served) -> None:
    status, headers, body = await fetch(served, {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert int(headers["Content-Length"]) == len(body)
    plain = generate_latest(served.registry) + bytes(served.state)
    assert len(body) < len(plain) / 5  # sent compressed, not merely labelled so
    assert gzip.decompress(body) == plain
    _, _, plain_body = await fetch(served, {"Accept-Encoding": "identity"})
    assert gzip.decompress(body) == plain_body


async def test_a_client_without_gzip_gets_the_text_with_its_length(served: Served) -> None:
    for headers in ({}, {"Accept-Encoding": "gzip;q=0, deflate"}):
        status, response_headers, body = await fetch(served, headers)
        assert status == 200
        assert "Content-Encoding" not in response_headers
        assert response_headers["Content-Type"] == CONTENT_TYPE_LATEST
        assert int(response_headers["Content-Length"]) == len(body)
        assert len(body) > 1 << 20  # written in several pieces
        assert body == generate_latest(served.registry) + bytes(served.state)
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert len(families["exposure_monitor_allowance_unlimited"].samples) == 4_000
        assert families["exposure_monitor_polls"].samples[0].value == 3
        assert "exposure_monitor_open_findings" in families


async def test_head_sends_the_headers_and_no_body(served: Served) -> None:
    _, get_headers, _ = await fetch(served, {"Accept-Encoding": "gzip"})
    status, headers, body = await fetch(served, {"Accept-Encoding": "gzip"}, method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["Content-Length"] == get_headers["Content-Length"]
    assert headers["Content-Encoding"] == "gzip"


async def test_promtool_accepts_the_decompressed_exposition() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (scripts/tools puts it in .tools/bin)"
    async for served in serve(render(view(findings=MANY_FINDINGS)).text):
        _, _, body = await fetch(served, {"Accept-Encoding": "gzip"})
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=gzip.decompress(body), capture_output=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_basic_auth_is_still_required_on_metrics() -> None:
    async for served in serve(render(view()).text, users={"prometheus": HASHED}):
        status, headers, _ = await fetch(served, {"Accept-Encoding": "gzip"})
        assert status == 401
        assert "Content-Encoding" not in headers
        wrong = "Basic " + b64encode(b"prometheus:wrong").decode()
        assert (await fetch(served, {"Authorization": wrong}))[0] == 401
        right = "Basic " + b64encode(b"prometheus:s3cret").decode()
        status, headers, body = await fetch(
            served, {"Authorization": right, "Accept-Encoding": "gzip"}
        )
        assert (status, headers["Content-Encoding"]) == (200, "gzip")
        assert b"exposure_monitor_finding{" in gzip.decompress(body)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("deflate, gzip", True),
        ("GZIP ; q=0.5", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=x", False),
        ("", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzipped", False),
    ],
)
def test_accept_encoding_is_read_with_its_weights(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def monitor(max_findings: int, registry: CollectorRegistry) -> Monitor:
    config = parse_config(
        {
            "wallets": [{"address": W}],
            "chains": [{"id": 1, "spenders": [{"address": S}]}],
            "metrics": {"max_position_series": 1, "max_finding_series": max_findings},
        }
    )
    # The poll cycle is not run here: only publishing, which uses neither source nor store.
    return Monitor(
        config=config,
        source=cast(Any, None),
        store=cast(Any, None),
        prices=None,
        exploits=bundled_exploits(),
        instruments=Instruments(registry, version="9.9.9"),
        clock=lambda: NOW,
        poll_timeout_s=10,
    )


async def test_dropped_series_are_counted_once_per_view_built() -> None:
    registry = CollectorRegistry()
    daemon = monitor(4, registry)

    def dropped(kind: str) -> float | None:
        return registry.get_sample_value(f"exposure_monitor_{kind}_series_dropped_total")

    first = view(findings=MANY_FINDINGS)
    await daemon._publish(first)
    assert (dropped("finding"), dropped("position")) == (2, 4)
    await daemon._publish(replace(first, last_success={(1, S): NOW}))  # same positions, findings
    assert (dropped("finding"), dropped("position")) == (2, 4)
    extra = Finding(
        rule=RuleName.FRESH_APPROVAL,
        severity=Severity.INFO,
        chain_id=1,
        wallet=W,
        spender=S,
        token=USDC,
        detail="",
    )
    await daemon._publish(replace(first, findings=(*MANY_FINDINGS, extra)))
    assert (dropped("finding"), dropped("position")) == (2 + 3, 4)
    text = bytes(daemon.state_text)
    assert text.count(b"\nexposure_monitor_finding{") == 4
    assert (
        b'exposure_monitor_open_findings{rule="fresh_approval",severity="info",chain_id="1"} 2.0'
        in text
    )
