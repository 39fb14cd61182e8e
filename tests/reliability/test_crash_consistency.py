"""Item 3: SIGKILL the daemon at seeded random moments during polls, restart it each time,
then compare the recorded change events with the scenario's ground truth.

The simulator advances its poll count per (chain, spender, wallet) and per answer served, so
an answer served to a poll that is then killed is never recorded: the next recorded poll may
see a count one step further. Each value of the timeline therefore lasts ``HOLD`` counts, and
the test makes sure a poll is recorded at least every ``MAX_IDLE_CYCLES`` restarts; every value
of the timeline must then be recorded exactly once per change, in order.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.domain.model import UINT256_MAX
from tests.daemon_helpers import (
    get,
    metric_value,
    simulator_process,
    simulator_state,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.reliability.common import daemon_config, db_check, history, sqlite_rows, write_scenario

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(420)]


def state_loaded(metrics_url: str) -> bool:
    return metric_value(metrics_url, "exposure_monitor_state_loaded") == 1


SEED = 20261124
KILLS = 60
HOLD = 6
MAX_IDLE_CYCLES = 2

W1 = "0x5014ef5ED72014E90B82285EA7888B4A091409Ec"
W2 = "0xfcd6A6536Fc62D5Dcf3E1Fd31F6BF54eA18ccBa2"
ROUTER = "0x111111125421cA6dc452d289314280a0f8842A65"
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
MAX = str(UINT256_MAX)

# key -> (starting amount, [(at_poll, amount), ...]); a change every HOLD polls at most.
ALLOWANCES: dict[tuple[str, str, str], tuple[str, list[tuple[int, str]]]] = {
    (W1, USDC, ROUTER): ("1000", [(7, "2000"), (13, MAX), (19, "500"), (25, "0"), (31, "42")]),
    (W2, DAI, ROUTER): ("0", [(10, MAX), (22, "0"), (34, "7")]),
    (W1, DAI, PERMIT2): ("5", [(4, "9"), (16, str(2**160 - 1)), (28, "3")]),
    (W2, USDC, PERMIT2): ("77", []),
}
BALANCES: dict[tuple[str, str], tuple[str, list[tuple[int, str]]]] = {
    (W1, USDC): ("5000", [(4, "6000"), (16, "0"), (28, "9000")]),
    (W2, DAI): ("100", [(12, "200"), (24, "150")]),
    (W1, DAI): ("0", [(9, "1")]),
}
LAST_STEP = 34


def scenario_doc() -> dict[str, Any]:
    doc: dict[str, Any] = {
        "chains": [{"id": 1, "tokens": [
            {"native": True, "symbol": "ETH"},
            {"address": USDC, "symbol": "USDC", "decimals": 6},
            {"address": DAI, "symbol": "DAI", "decimals": 18},
        ]}],
        "wallets": [{"address": W1, "label": "one"}, {"address": W2, "label": "two"}],
        "spenders": [{"chain": 1, "address": ROUTER}, {"chain": 1, "address": PERMIT2}],
        "allowances": [], "balances": [], "timeline": [],
    }  # fmt: skip
    for (wallet, token, spender), (start, steps) in ALLOWANCES.items():
        if start != "0":
            doc["allowances"].append(
                {"chain": 1, "wallet": wallet, "token": token, "spender": spender, "amount": start}
            )
        for at, amount in steps:
            doc["timeline"].append(
                {"at_poll": at, "set_allowance": {"chain": 1, "wallet": wallet, "token": token, "spender": spender, "amount": amount}}
            )  # fmt: skip
    for (wallet, token), (start, steps) in BALANCES.items():
        if start != "0":
            doc["balances"].append({"chain": 1, "wallet": wallet, "token": token, "amount": start})
        for at, amount in steps:
            doc["timeline"].append(
                {"at_poll": at, "set_balance": {"chain": 1, "wallet": wallet, "token": token, "amount": amount}}
            )  # fmt: skip
    return doc


def expected_events() -> dict[tuple[str, str, str, str | None], list[tuple[str, str]]]:
    """Ground truth: per key, every (old, new) change from 0 through the timeline's values."""
    truth: dict[tuple[str, str, str, str | None], list[tuple[str, str]]] = {}
    keyed = [((w, t, s), v) for (w, t, s), v in ALLOWANCES.items()]
    keyed += [((w, t, None), v) for (w, t), v in BALANCES.items()]
    for (wallet, token, spender), (start, steps) in keyed:
        values = [start] + [amount for _, amount in sorted(steps)]
        changes, old = [], "0"
        for new in values:
            if new != old:
                changes.append((old, new))
                old = new
        truth[("1", wallet.lower(), token.lower(), spender.lower() if spender else None)] = changes
    return truth


def recorded_polls(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return int(sqlite_rows(db, "SELECT count(*) FROM polls WHERE outcome != 'failed'")[0][0])
    except Exception:
        return 0


def min_count(base_url: str) -> int:
    counts = [c["count"] for c in simulator_state(base_url)["poll_counts"]]
    return min(counts) if len(counts) == 4 else 0


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    scenario = write_scenario(tmp_path / "scenario.yaml", scenario_doc())
    db = tmp_path / "monitor.sqlite"
    log = tmp_path / "daemon.log"
    kills = forced_waits = 0
    started = time.monotonic()
    with simulator_process(scenario) as base_url:
        config, metrics_url = daemon_config(
            tmp_path, scenario, base_url, api={"requests_per_second": 1000, "max_attempts": 2}
        )
        idle_cycles = 0
        while kills < KILLS:
            before = recorded_polls(db)
            daemon = start_daemon(config, log=log)
            try:
                wait_for(lambda: state_loaded(metrics_url), 30, "the stored state")
                if idle_cycles >= MAX_IDLE_CYCLES:
                    forced_waits += 1
                    wait_for(lambda b=before: recorded_polls(db) > b, 30, "a recorded poll")
                # The first poll starts as the stored state is loaded (the listener answers
                # before), then one each second: land in
                # the first 250 ms of the first or second poll, where the requests and the
                # database transaction are.
                time.sleep(rng.choice((0.0, 1.0)) + rng.uniform(0.0, 0.25))
                assert daemon.poll() is None, log.read_text()[-3000:]
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(timeout=10)
                kills += 1
            finally:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait()
            idle_cycles = idle_cycles + 1 if recorded_polls(db) == before else 0
        kill_phase_s = time.monotonic() - started
        # A clean last run through the rest of the timeline.
        daemon = start_daemon(config, log=log)
        try:
            wait_for(lambda: get(metrics_url + "/healthz")[0] == 200, 30, "the listener")
            wait_for(lambda: min_count(base_url) >= LAST_STEP + 1, 120, "the end of the timeline")
            last = sqlite_rows(db, "SELECT max(id) FROM polls")[0][0]
            wait_for(
                lambda: (
                    sqlite_rows(
                        db, f"SELECT count(*) FROM polls WHERE id > {last} AND outcome = 'ok'"
                    )[0][0]
                    > 0
                ),
                30,
                "a recorded poll after the end",
            )
            assert stop_daemon(daemon) == 0
        finally:
            stop_daemon(daemon)
        polls_served = min_count(base_url)

    db_check(config)
    truth = expected_events()
    got: dict[tuple[str, str, str, str | None], list[tuple[str, str]]] = {}
    for event in history(config):
        key = (str(event["chain_id"]), event["wallet"], event["token"], event["spender"])
        got.setdefault(key, []).append((event["old"], event["new"]))
    compared = sum(len(v) for v in truth.values())
    polls = int(sqlite_rows(db, "SELECT count(*) FROM polls")[0][0])
    print(
        f"\ncrash consistency: {kills} SIGKILLs survived ({forced_waits} cycles waited for a "
        f"recorded poll), {polls} polls recorded, {polls_served} served per key, "
        f"{compared} events compared with ground truth, kill phase {kill_phase_s:.0f}s"
    )
    assert got == truth
