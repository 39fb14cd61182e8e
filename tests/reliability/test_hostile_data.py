"""Item 7: hostile token symbols and names from upstream: escaped on the status page, valid in
the metrics exposition (promtool and prometheus_client's parser), stored verbatim."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.daemon.metrics import MAX_LABEL_TEXT
from monitor.oneinch import parse
from tests.daemon_helpers import (
    get,
    metric_samples,
    simulator_process,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.reliability.common import daemon_config, scrape, sqlite_rows, write_scenario

pytestmark = pytest.mark.reliability

WALLET = "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2"
ROUTER = "0x111111125421cA6dc452d289314280a0f8842A65"
HOSTILE = {
    "0x6b175474e89094c44da98b954eedeac495271d0f": (
        '<script>alert("x")</script>\'&amp;',
        '<img src=x onerror="alert(1)"> \\" \\n',
    ),
    "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48": (
        "new\nline\r\ntab\there\x01\x08\x1b[31m\x7f",
        'quote " apostrophe \' backslash \\ brace {a="b"} # HELP fake',
    ),
    "0xdac17f958d2ee523a2206206994597c13d1ec7": None,  # replaced below (needs 40 hex digits)
    "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984": ("A" * 10_000, "\u2028\u2029\u202eevil\u200b é 😀 " + "<b>" * 3000),
}  # fmt: skip
del HOSTILE["0xdac17f958d2ee523a2206206994597c13d1ec7"]


def label_text(text: str) -> str:
    return text if len(text) <= MAX_LABEL_TEXT else text[: MAX_LABEL_TEXT - 1] + "\u2026"


def promtool() -> str:
    found = shutil.which("promtool") or str(
        Path(__file__).resolve().parents[2] / ".tools/bin/promtool"
    )
    assert Path(found).exists(), "promtool is required (scripts/tools fetches it)"
    return found


def test_hostile_token_names_are_escaped_valid_and_stored_verbatim(tmp_path: Path) -> None:
    tokens = [{"native": True, "symbol": "ETH", "usd_price": "3500"}]
    allowances = []
    for address, (symbol, name) in HOSTILE.items():
        tokens.append(
            {"address": address, "symbol": symbol, "name": name, "decimals": 6, "usd_price": "1"}
        )
        allowances.append(
            {"chain": 1, "wallet": WALLET, "token": address, "spender": ROUTER, "amount": "max"}
        )
    doc = {
        "chains": [{"id": 1, "tokens": tokens}],
        "wallets": [{"address": WALLET}],
        "spenders": [{"chain": 1, "address": ROUTER}],
        "balances": [{"chain": 1, "wallet": WALLET, "token": a, "amount": "5"} for a in HOSTILE],
        "allowances": allowances,
    }  # fmt: skip
    scenario = write_scenario(tmp_path / "scenario.yaml", doc)
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path, scenario, base_url, risk={"prices": {"enabled": True, "ttl_s": 300}}
        )
        daemon = start_daemon(config, log=tmp_path / "daemon.log")
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            wait_for(
                lambda: len(metric_samples(scrape(metrics_url), "exposure_monitor_allowance_unlimited")) == len(HOSTILE),
                30,
                "the hostile tokens' series",
            )  # fmt: skip
            text = scrape(metrics_url)
            status, page = get(metrics_url + "/")
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)

    # Status page: nothing from upstream becomes markup.
    assert status == 200
    for raw in ("<script>", "<img", "<b>", "\u202e"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page  # Jinja2 escapes " as &#34;
    # Metrics: promtool and the Python parser accept the exposition, and labels round-trip.
    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    symbols = {
        labels["token"]: labels.get("symbol")
        for labels, _ in metric_samples(text, "exposure_monitor_allowance_unlimited")
    }
    # Label values are capped (monitor/daemon/metrics.py MAX_LABEL_TEXT), never altered.
    assert symbols == {a: label_text(s) for a, (s, _) in HOSTILE.items()}
    # Database: stored verbatim.
    stored = {
        address: (symbol, name)
        for address, symbol, name in sqlite_rows(
            tmp_path / "monitor.sqlite",
            # Addresses are stored as their 20 bytes (README, "How values are stored").
            "SELECT '0x' || lower(hex(address)), symbol, name FROM tokens WHERE chain_id = 1",
        )
    }
    for address, pair in HOSTILE.items():
        assert stored[address] == pair, address


error_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["description", "message", "error", "statusCode", "meta"]) | st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)  # fmt: skip


@given(error_bodies)
def test_any_error_body_is_described_by_a_string_or_none(body: object) -> None:
    described = parse.describe_error_body(body)
    assert described is None or (isinstance(described, str) and described.strip())


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_body_bytes_parse_to_a_typed_result_or_a_value_error(raw: bytes) -> None:
    # What the client hands the parsers: whatever json.loads makes of a 200 body.
    try:
        data = json.loads(raw)
    except ValueError:
        return
    for parser in (
        lambda d: parse.parse_aggregated(d, chain_id=1),
        parse.parse_amount_map,
        parse.parse_wallet_amount_maps,
        parse.parse_balance_allowance_map,
        parse.parse_prices,
        parse.parse_currencies,
    ):
        with contextlib.suppress(ValueError):
            parser(data)


@given(st.text(alphabet=st.characters(), min_size=1, max_size=90))
def test_amount_text_is_a_canonical_decimal_or_refused(text: str) -> None:
    # Python's int() accepts "1_000", " 7 ", "+5" and non-ASCII digits ("١٢٣"): upstream
    # amounts must be plain ASCII digits, anything else is a typed error.
    try:
        amounts = parse.parse_amount_map({"0x6b175474e89094c44da98b954eedeac495271d0f": text})
    except ValueError:
        return
    assert text.isascii() and text.isdigit(), repr(text)
    assert list(amounts.values()) == [int(text)]
