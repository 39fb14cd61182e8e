"""``exposure-monitor check``: configs that cannot work are refused (exit 2) with the keys to
change and the arithmetic; ``--online`` reaches each upstream once (exit 3 when it cannot)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.commands.check import PRICE_TOKENS_PER_REQUEST, request_budget, run_check
from monitor.config import load_config
from monitor.config.secrets import is_oneinch_api, key_form_problem
from monitor.oneinch.client import RequestRecord
from monitor.oneinch.prices import MAX_TOKENS_PER_REQUEST
from monitor.poller import poll_once
from monitor.runtime import open_client
from monitor.simulator.model import Scenario
from monitor.simulator.server import RunningSimulator, run_simulator
from tests.simulator_helpers import CUSTOM, SPENDER, WALLET_A, WALLET_B, small

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
FAKE_KEY = "sk-FAKE-check-0123456789abcdef"  # recognisable, of a plausible form
ROUTER = "0x111111125421cA6dc452d289314280a0f8842A65"
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"


def check(
    path: Path, *, online: bool = False, environ: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_check(path, online=online, out=out, err=err, environ=environ or {})
    everything = out.getvalue() + err.getvalue()
    assert FAKE_KEY not in everything and FAKE_KEY[3:] not in everything
    return code, out.getvalue(), err.getvalue()


def write_config(tmp_path: Path, doc: dict[str, Any], name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def config_doc(
    base_url: str = "https://api.1inch.dev",
    *,
    wallets: int = 2,
    api: Mapping[str, Any] | None = None,
    poll: Mapping[str, Any] | None = None,
    chains: list[dict[str, Any]] | None = None,
    prices: bool = True,
) -> dict[str, Any]:
    return {
        "api": {"base_url": base_url, **(api or {})},
        "poll": dict(poll or {}),
        "wallets": [
            {"address": "0x" + f"{i + 1:040x}", "label": f"w{i + 1}"} for i in range(wallets)
        ],
        "chains": chains
        or [{"id": 1, "spenders": [{"address": ROUTER, "label": "1inch Router v6"}]}],
        "risk": {"prices": {"enabled": prices}},
    }


def spenders(n: int) -> list[dict[str, Any]]:
    return [{"address": "0x" + f"{0x5E00 + i:040x}"} for i in range(n)]


# -- the key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    ["https://api.1inch.dev", "https://api.1inch.com", "https://API.1inch.com/some/prefix"],
)
def test_the_real_api_without_any_key_is_a_config_error(tmp_path: Path, base_url: str) -> None:
    code, out, err = check(write_config(tmp_path, config_doc(base_url)), environ={})
    assert code == 2
    assert out == ""
    assert err.startswith("exposure-monitor: config error: api.base_url ")
    assert "is the real 1inch API" in err
    assert "ONEINCH_API_KEY" in err and "oneinch_api_key" in err


def test_a_credentials_directory_without_our_credential_is_no_key(tmp_path: Path) -> None:
    code, _, err = check(
        write_config(tmp_path, config_doc()), environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert code == 2
    assert "none is set" in err


def test_a_simulator_needs_no_key_and_check_says_so(tmp_path: Path) -> None:
    code, out, err = check(write_config(tmp_path, config_doc("http://127.0.0.1:8900")))
    assert (code, err) == (0, "")
    assert "API key: no key (not needed for 127.0.0.1:8900)\n" in out


def test_the_key_source_is_the_environment_variable_never_the_key(tmp_path: Path) -> None:
    code, out, err = check(
        write_config(tmp_path, config_doc()), environ={"ONEINCH_API_KEY": FAKE_KEY}
    )
    assert (code, err) == (0, "")
    assert "API key: environment variable ONEINCH_API_KEY\n" in out


def test_the_key_source_is_the_credential_file_never_the_key(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "oneinch_api_key").write_text(FAKE_KEY + "\n")
    code, out, err = check(
        write_config(tmp_path, config_doc()),
        environ={"CREDENTIALS_DIRECTORY": str(credentials), "ONEINCH_API_KEY": "ignored-key"},
    )
    assert (code, err) == (0, "")
    assert f"API key: credential file {credentials / 'oneinch_api_key'}\n" in out


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (FAKE_KEY[:10], "10 characters long, not a plausible 1inch key (16 to 512)"),
        (FAKE_KEY * 20, "600 characters long"),
        (f'"{FAKE_KEY}"', "wrapped in quotes"),
        (f"Bearer {FAKE_KEY}", "starts with 'Bearer'"),
        (FAKE_KEY[:12] + " " + FAKE_KEY[12:], "whitespace"),
        (FAKE_KEY + "\x07", "control characters"),
        (FAKE_KEY + "é", "outside printable ASCII"),
    ],
)
def test_a_key_of_the_wrong_form_is_named_by_its_source_and_never_echoed(
    tmp_path: Path, value: str, problem: str
) -> None:
    config = write_config(tmp_path, config_doc())
    code, out, err = check(config, environ={"ONEINCH_API_KEY": value})
    assert (code, out) == (2, "")
    assert err.startswith("exposure-monitor: config error: environment variable ONEINCH_API_KEY: ")
    assert problem in err
    assert FAKE_KEY[:10] not in err

    credentials = tmp_path / "credentials"
    credentials.mkdir(exist_ok=True)
    (credentials / "oneinch_api_key").write_text(value)
    code, _, err = check(config, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert code == 2
    assert f"credential file {credentials / 'oneinch_api_key'}: " in err
    assert problem in err and FAKE_KEY[:10] not in err


def test_a_short_key_is_fine_for_a_simulator(tmp_path: Path) -> None:
    code, out, _ = check(
        write_config(tmp_path, config_doc("http://127.0.0.1:8900")),
        environ={"ONEINCH_API_KEY": "k-1"},
    )
    assert code == 0
    assert "API key: environment variable ONEINCH_API_KEY\n" in out


def test_key_form_and_host_rules() -> None:
    assert key_form_problem("nvSUtwNGM2vIvUGK6JzGBlcEvEjSHKRX", oneinch_api=True) is None
    assert key_form_problem("a.b-c_d~e+f/g=h0123456789", oneinch_api=True) is None
    assert is_oneinch_api("https://api.1inch.dev")
    assert is_oneinch_api("https://api.1inch.com:443/prefix/")
    assert not is_oneinch_api("http://127.0.0.1:8900")
    assert not is_oneinch_api("https://api.1inch.dev.example.org")


# -- the poll budget -------------------------------------------------------------------------


def test_a_poll_slower_than_its_timeout_is_refused_with_the_arithmetic(tmp_path: Path) -> None:
    # 120 wallets in batches of 2 = 60 batches, for each of 4 spenders: 240 requests.
    doc = config_doc(
        "http://127.0.0.1:8900",
        wallets=120,
        api={"requests_per_second": 1, "max_wallets_per_request": 2},
        chains=[{"id": 1, "spenders": spenders(4)}],
    )
    code, out, err = check(write_config(tmp_path, doc))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "a poll makes 240 requests (240 aggregated" in err
    assert "api.max_wallets_per_request 2 wallets" in err
    assert "at api.requests_per_second 1 that takes at least 240 s" in err
    assert "poll.timeout_s 240 (0.8 of poll.interval_s 300)" in err
    assert "raise api.requests_per_second" in err and "poll.interval_s" in err
    assert "raise api.max_wallets_per_request" in err
    assert "watch fewer spenders" in err


def test_custom_tokens_count_one_request_per_wallet_and_spender(tmp_path: Path) -> None:
    # 10 wallets x 3 spenders on a chain with custom tokens: 3 aggregated + 30 custom = 33;
    # at 0.25 requests a second that is 132 s, over an explicit poll.timeout_s of 120.
    chains = [{"id": 1, "spenders": spenders(3), "custom_tokens": ["0x" + "c0" * 20]}]
    doc = config_doc(
        "http://127.0.0.1:8900",
        wallets=10,
        api={"requests_per_second": 0.25},
        poll={"interval_s": 600, "timeout_s": 120},
        chains=chains,
    )
    code, _, err = check(write_config(tmp_path, doc))
    assert code == 2
    assert "a poll makes 33 requests (3 aggregated" in err
    assert "30 for custom tokens: one per wallet and spender" in err
    assert "takes at least 132 s" in err
    assert "poll.timeout_s 120 (poll.interval_s 600)" in err
    assert "or poll.timeout_s (and poll.interval_s, its ceiling)" in err
    assert "or custom tokens" in err


def test_price_requests_that_push_a_cycle_past_the_interval_are_a_warning(
    tmp_path: Path,
) -> None:
    # 8 requests on two chains fit in poll.timeout_s 10, but with one price request per chain
    # (made after the poll, outside its timeout) a cycle fills poll.interval_s 10 at 1 a second.
    chains = [{"id": 1, "spenders": spenders(4)}, {"id": 8453, "spenders": spenders(4)}]
    doc = config_doc(
        "http://127.0.0.1:8900", chains=chains, poll={"interval_s": 10, "timeout_s": 10}
    )
    code, out, err = check(write_config(tmp_path, doc))
    assert code == 0
    assert "a poll makes 8 requests (8 aggregated" in out
    assert "after it, price requests: one per chain and 100 tokens at risk" in out
    assert err == (
        "exposure-monitor: warning: with a price request for each of its 2 chains "
        "(risk.prices.enabled), a poll cycle takes at least 10 s at api.requests_per_second 1, "
        "not less than poll.interval_s 10: polls will start late whenever prices are due\n"
    )
    doc["risk"]["prices"]["enabled"] = False
    code, out, err = check(write_config(tmp_path, doc))
    assert (code, err) == (0, "")
    assert "price requests" not in out


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    doc = config_doc(
        wallets=120, api={"max_wallets_per_request": 2}, chains=[{"id": 1, "spenders": spenders(4)}]
    )
    code, _, err = check(write_config(tmp_path, doc))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 2
    assert "api.base_url" in lines[0] and "poll.timeout_s" in lines[1]


def test_the_example_lists_what_it_watches_and_what_a_poll_costs() -> None:
    code, out, err = check(EXAMPLE)
    assert (code, err) == (0, "")
    assert "ok (3 wallets, 2 chains, 5 spenders)" in out
    assert "Ethereum (chain 1): 3 wallets, 4 spenders, 1 custom token\n" in out
    assert "  wallet   treasury (0x5014ef5ED72014E90B82285EA7888B4A091409Ec)\n" in out
    assert f"  spender  1inch Router v6 ({ROUTER}), trusted\n" in out
    assert "  spender  unknown spender (0x161b1dFB96298624a40C7D1E1948cd75045E5AbA)\n" in out
    base = out[out.index("Base (chain 8453): 2 wallets, 1 spender\n") :]
    assert "cold" not in base.split("a poll makes")[0]  # cold is narrowed to chain 1
    assert "a poll makes 17 requests (5 aggregated" in out
    assert "12 for custom tokens" in out
    assert "; after it, price requests: one per chain and 100 tokens at risk without a price" in out
    assert "risk.prices.ttl_s 300 s (not counted: how many depends on the data)" in out
    assert "minimum poll duration: 17 s at api.requests_per_second 1 (poll.timeout_s 240" in out


async def test_the_count_is_what_a_poll_really_sends(tmp_path: Path) -> None:
    """The budget counts requests as the poller makes them: checked against a real poll."""
    scenario = small()
    async with run_simulator(scenario) as simulator:
        doc = config_doc(
            simulator.base_url,
            wallets=3,
            api={"max_wallets_per_request": 2, "requests_per_second": 1000},
            chains=[
                {
                    "id": 1,
                    "spenders": [*spenders(2), {"address": SPENDER}],
                    "custom_tokens": [CUSTOM],
                },
                {"id": 8453, "spenders": spenders(2)},
                {"id": 10, "spenders": spenders(1)},
            ],
        )
        doc["wallets"] += [
            {"address": WALLET_A, "chains": [1]},
            {"address": WALLET_B, "chains": [1, 8453]},
        ]
        config = load_config(write_config(tmp_path, doc))
        records: list[RequestRecord] = []
        async with open_client(config, None, on_request=records.append) as client:
            result = await poll_once(client, config)
    assert not result.failures
    budget = request_budget(config)
    # chain 1: 5 wallets -> 3 batches x 3 spenders + 5 x 3 custom; 8453: 4 -> 2 x 2; 10: 3 -> 2
    assert (budget.aggregated, budget.custom) == (9 + 4 + 2, 15)
    assert len(records) == budget.poll
    assert PRICE_TOKENS_PER_REQUEST == MAX_TOKENS_PER_REQUEST


# -- --online ------------------------------------------------------------------------------


@contextlib.contextmanager
def simulator_thread(scenario: Scenario) -> Iterator[RunningSimulator]:
    """The real simulator on a loopback port, served by its own event loop in a thread."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        async with run_simulator(scenario) as simulator:
            box["simulator"] = simulator
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the simulator did not start"
    try:
        yield box["simulator"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def online_config(tmp_path: Path, base_url: str, *, prices: bool = True) -> Path:
    doc = small().monitor_config(base_url)
    doc["api"] = {**doc["api"], "requests_per_second": 50}  # type: ignore[dict-item]
    doc["risk"] = {"prices": {"enabled": prices}}
    return write_config(tmp_path, doc)


def test_online_reports_each_upstream_reachable_with_the_key_accepted(tmp_path: Path) -> None:
    with simulator_thread(small(api_key=FAKE_KEY)) as simulator:
        host = simulator.base_url.removeprefix("http://")
        code, out, err = check(
            online_config(tmp_path, simulator.base_url),
            online=True,
            environ={"ONEINCH_API_KEY": FAKE_KEY},
        )
        requests = list(simulator.requests)
        count = simulator.poll_count(1, SPENDER, WALLET_A)
    assert (code, err) == (0, "")
    online = out[out.index("online:\n") :].splitlines()[1:]
    assert len(online) == 2
    assert online[0].split()[:2] == ["Balance", "API"]
    assert f" {host}: reachable, key accepted, " in online[0] and online[0].endswith(" ms")
    assert online[1].split()[:3] == ["Spot", "Price", "API"]
    assert f" {host}: reachable, key accepted, " in online[1] and online[1].endswith(" ms")
    # One request per upstream, keyed, and no simulator timeline moved on.
    assert [(r.method, r.path.split("/")[1], r.status) for r in requests] == [
        ("POST", "balance", 200),
        ("POST", "price", 200),
    ]
    assert all(r.authorization_present for r in requests)
    assert count == 0


def test_online_with_a_wrong_key_reports_it_rejected_and_exits_3(tmp_path: Path) -> None:
    with simulator_thread(small(api_key="the-right-key-0123456789")) as simulator:
        code, out, err = check(
            online_config(tmp_path, simulator.base_url, prices=False),
            online=True,
            environ={"ONEINCH_API_KEY": FAKE_KEY},
        )
    assert code == 3
    online = out[out.index("online:\n") :].splitlines()[1:]
    assert len(online) == 1  # prices disabled: the Balance API only
    assert "reachable, key rejected (HTTP 401: API key missing or refused" in online[0]
    assert err.startswith("exposure-monitor: upstream error: Balance API at 127.0.0.1:")
    assert "key rejected" in err


def test_online_without_a_key_where_one_is_wanted_says_so(tmp_path: Path) -> None:
    with simulator_thread(small(api_key="the-right-key-0123456789")) as simulator:
        code, out, _ = check(online_config(tmp_path, simulator.base_url), online=True)
    assert code == 3
    assert "API key: no key (not needed for 127.0.0.1:" in out
    assert out.count("a key is required (none was sent) (HTTP 401") == 2


def test_online_against_a_closed_port_is_unreachable_and_fast(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = online_config(tmp_path, f"http://127.0.0.1:{port}")
    started = time.monotonic()
    code, out, err = check(config, online=True, environ={"ONEINCH_API_KEY": FAKE_KEY})
    assert time.monotonic() - started < 10
    assert code == 3
    online = out[out.index("online:\n") :].splitlines()[1:]
    assert len(online) == 2
    for line in online:
        assert f" 127.0.0.1:{port}: unreachable (connection failed" in line
        assert "ms" not in line
    assert err.count(f"at 127.0.0.1:{port}: unreachable") == 2


# -- as users run it -------------------------------------------------------------------------


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("ONEINCH_API_KEY", "CREDENTIALS_DIRECTORY")
    }
    result = subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )
    assert FAKE_KEY not in result.stdout + result.stderr
    return result


def test_cli_check_refuses_the_real_api_without_a_key_and_a_poll_over_its_timeout(
    tmp_path: Path,
) -> None:
    doc = config_doc(
        wallets=120, api={"max_wallets_per_request": 2}, chains=[{"id": 1, "spenders": spenders(4)}]
    )
    result = run_cli("check", "--config", str(write_config(tmp_path, doc)))
    assert result.returncode == 2
    assert result.stdout == ""
    first, second = result.stderr.splitlines()
    assert first.startswith("exposure-monitor: config error: api.base_url https://api.1inch.dev")
    assert "ONEINCH_API_KEY" in first
    assert "a poll makes 240 requests" in second
    assert "takes at least 240 s: it cannot finish within poll.timeout_s 240" in second


def test_cli_check_names_the_key_source_and_never_shows_the_key(tmp_path: Path) -> None:
    result = run_cli(
        "check", "--config", str(write_config(tmp_path, config_doc())),
        env={"ONEINCH_API_KEY": FAKE_KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "API key: environment variable ONEINCH_API_KEY\n" in result.stdout


def test_cli_check_online_against_the_simulator(tmp_path: Path) -> None:
    with simulator_thread(small(api_key=FAKE_KEY)) as simulator:
        config = str(online_config(tmp_path, simulator.base_url))
        accepted = run_cli(
            "check", "--config", config, "--online", env={"ONEINCH_API_KEY": FAKE_KEY}
        )
        rejected = run_cli(
            "check", "--config", config, "--online", env={"ONEINCH_API_KEY": FAKE_KEY[::-1]}
        )
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.count(": reachable, key accepted, ") == 2
    assert rejected.returncode == 3
    assert rejected.stdout.count(": reachable, key rejected (HTTP 401") == 2
    assert FAKE_KEY[::-1] not in rejected.stdout + rejected.stderr
