"""The operations kit end to end: real processes, no fakes.

The simulator serves a scenario in which the ops wallet grants the 1inch router an unlimited
DAI approval and later revokes it; ``exposure-monitor run`` polls it every second; a real
Prometheus (Debian's, started here on loopback with a temporary data directory) scrapes the
daemon every second and evaluates the shipped ``deploy/prometheus/rules.yml`` unchanged, with
their production ``for:`` durations; a real Alertmanager (loopback, clustering off, a
temporary directory) routes with a configuration derived from the shipped example (its route
tree and inhibit rules kept, group timings shortened, every receiver pointed at a webhook
receiver served by this test). The alert for the approval must reach the webhook as firing
and then as resolved; the time from the approval appearing upstream to the webhook receiving
it is measured and printed (``pytest -s``). The same Prometheus then answers every query of
the shipped Grafana dashboard, each of which must return data.

Ethereum also has discovery, on a real anvil (``tests/chain_helpers.py``) whose URL carries a
secret in its query: there the ops wallet approved a token to an address with no code (the
phishing signature: ExposureMonitorEoaSpender pages on-call) and a contract that is no token
emitted a fake Approval naming it (an unreadable pair). The discovery panels of the dashboard
must return data too, and the secret must appear nowhere the daemon serves.

``prometheus`` and ``alertmanager`` (or Debian's ``prometheus-alertmanager``) are required:
without them this test fails rather than skips. ``scripts/tools`` provides them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chain_helpers import UINT256_MAX, Anvil
from tests.daemon_helpers import (
    ROOT,
    daemon_process,
    free_port,
    get,
    simulator_process,
    wait_for,
    write_config,
)
from tests.test_deploy_dashboard import label_values_query, panel_queries, substitute, variables

pytestmark = pytest.mark.slow

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
PROMETHEUS_EXAMPLE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_EXAMPLE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DEFAULT_SCENARIO = ROOT / "monitor" / "simulator" / "default_scenario.yaml"

TREASURY = "0x5014ef5ed72014e90b82285ea7888b4a091409ec"
OPS = "0xfcd6a6536fc62d5dcf3e1fd31f6bf54ea18ccba2"
COLD = "0x02487d261e10ae9fc6c76e86bb80b0fac04676c4"
ROUTER = "0x111111125421ca6dc452d289314280a0f8842a65"
PERMIT2 = "0x000000000022d473030f116ddee9f6b43ac78ba3"
UNKNOWN_SPENDER = "0x161b1dfb96298624a40c7d1e1948cd75045e5aba"
FURUCOMBO = "0x17e8ca1b4798b97602895f63206afcd1fc90ca5f"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
PHISHER = "0x" + "5e" * 20
"""A plain address (no code on anvil) that the ops wallet approves: the eoa_spender rule."""
RPC_SECRET = "hunter2"

# The default scenario grants at poll 3 and revokes at poll 6; here the grant comes once
# Prometheus has been scraping for a few seconds, and the revoke leaves the alert time to
# travel. With poll.interval_s 1, poll N is about N seconds after the daemon starts.
GRANT_POLL = 8
REVOKE_POLL = 20
POLL_INTERVAL_S = 1
SCRAPE_INTERVAL = "1s"
EVALUATION_INTERVAL = "1s"
ALERTMANAGER_TIMINGS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1m"}
# Generous: the sum of the settings above is about 4 s; a loaded CI machine gets room.
MAX_APPROVAL_TO_ALERT_S = 20


# -- processes ----------------------------------------------------------------------------------


def required_tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(
        f"{' or '.join(names)} not found: run scripts/tools (Debian's packages, unpacked into "
        ".tools/bin) and put its output on PATH, as scripts/test does"
    )


@contextlib.contextmanager
def server_process(args: list[str], log: Path, ready_url: str) -> Iterator[None]:
    """A server binary started with ``args``, ready when ``ready_url`` answers 200."""
    with open(log, "w") as output, subprocess.Popen(args, stdout=output, stderr=output) as proc:
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    if get(ready_url, timeout=1)[0] == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{Path(args[0]).name} did not get ready ({proc.returncode=}):\n{tail(log)}"
                    )
                time.sleep(0.1)
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


# -- the webhook receiver ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    received_at: float  # time.time()
    path: str
    payload: dict[str, Any]


class WebhookReceiver:
    """Alertmanager's webhook receiver: records every notification POSTed to it."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.notifications.append(
                        Notification(
                            received_at=time.time(), path=self.path, payload=json.loads(body)
                        )
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextlib.contextmanager
    def serving(self) -> Iterator[WebhookReceiver]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()

    def alerts(self, status: str, **labels: str) -> list[tuple[Notification, dict[str, Any]]]:
        """(notification, alert) for every received alert in ``status`` whose labels match."""
        with self._lock:
            notifications = list(self.notifications)
        return [
            (notification, alert)
            for notification in notifications
            for alert in notification.payload["alerts"]
            if alert["status"] == status
            and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]


# -- configurations ---------------------------------------------------------------------------


def scenario_file(path: Path) -> Path:
    """The default scenario with the DAI grant and revoke at GRANT_POLL and REVOKE_POLL."""
    doc = yaml.safe_load(DEFAULT_SCENARIO.read_text())
    moved = 0
    for event in doc["timeline"]:
        allowance = event.get("set_allowance")
        if allowance and allowance["token"].lower() == DAI and allowance["wallet"].lower() == OPS:
            event["at_poll"] = GRANT_POLL if allowance["amount"] == "max" else REVOKE_POLL
            moved += 1
    assert moved == 2, "the default scenario's DAI grant and revoke moved"
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainScene:
    """What the test did on anvil before the daemon started."""

    rpc_url: str
    """anvil's URL with a secret in the query, as a provider's would carry a key."""
    token: str
    fake: str


def chain_scene(node: Anvil) -> ChainScene:
    """On anvil: the ops wallet approves PHT without limit to PHISHER (no code), and a
    contract that is no token emits an Approval naming the ops wallet; then enough blocks
    for the approvals to be past discovery's 12 confirmations."""
    token = node.deploy("TestToken", "Phish Test", "PHT", 18)
    node.impersonate(OPS)
    node.send(OPS, token, "mint(address,uint256)", OPS, 1_000 * 10**18)
    node.send(OPS, token, "approve(address,uint256)", PHISHER, UINT256_MAX)
    fake = node.deploy("FakeApprovalEmitter")
    # Naming a spender of its own: any spender it names is checked for code, and one that the
    # config names (the router has none on a fresh anvil) would turn eoa_spender on for it.
    node.send(node.accounts[0], fake, "emitApproval(address,address,uint256)", OPS, PHISHER, 1)
    node.mine(20)
    return ChainScene(rpc_url=f"{node.url}?key={RPC_SECRET}", token=token, fake=fake)


def with_discovery(config: Path) -> Path:
    """The daemon's config with discovery on Ethereum (the endpoint comes from the
    environment), its RPC requests not throttled below the one-second polls."""
    doc = yaml.safe_load(config.read_text())
    (ethereum,) = [chain for chain in doc["chains"] if chain["id"] == 1]
    ethereum["discovery"] = {"start_block": 0}
    doc.setdefault("rpc", {})["requests_per_second"] = 1000
    config.write_text(yaml.safe_dump(doc))
    return config


def prometheus_config(path: Path, *, daemon: str, alertmanager: str) -> Path:
    """The shipped example with short intervals, the shipped rules and the test's targets."""
    doc = yaml.safe_load(PROMETHEUS_EXAMPLE.read_text())
    doc["global"].update(
        scrape_interval=SCRAPE_INTERVAL,
        scrape_timeout=SCRAPE_INTERVAL,
        evaluation_interval=EVALUATION_INTERVAL,
    )
    doc["rule_files"] = [str(RULES)]
    (manager,) = doc["alerting"]["alertmanagers"]
    manager["static_configs"] = [{"targets": [alertmanager]}]
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == "exposure-monitor"
    job["static_configs"] = [{"targets": [daemon]}]
    path.write_text(yaml.safe_dump(doc))
    return path


def alertmanager_config(path: Path, *, webhook_url: str) -> tuple[Path, set[str]]:
    """The shipped example with its routes and inhibit rules, short group timings, and every
    receiver a webhook to ``webhook_url``/<receiver name>. Returns (path, receiver names)."""
    doc = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())

    def shorten(route: dict[str, Any], root: bool) -> None:
        for key, value in ALERTMANAGER_TIMINGS.items():
            if root or key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child, root=False)

    shorten(doc["route"], root=True)
    names = {receiver["name"] for receiver in doc["receivers"]}
    doc["receivers"] = [
        {"name": name, "webhook_configs": [{"url": f"{webhook_url}/{name}", "send_resolved": True}]}
        for name in sorted(names)
    ]
    path.write_text(yaml.safe_dump(doc))
    return path, names


# -- HTTP APIs --------------------------------------------------------------------------------


def api(base_url: str, path: str, **params: str | float) -> Any:
    """A Prometheus or Alertmanager API call; returns ``data`` of a successful answer."""
    url = f"{base_url}{path}?{urllib.parse.urlencode(params)}" if params else base_url + path
    status, body = get(url, timeout=10)
    assert status == 200, f"{url}: {status} {body[:500]}"
    answer = json.loads(body)
    assert answer["status"] == "success", f"{url}: {answer}"
    return answer["data"]


def post_json(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def poll_count(simulator_url: str, chain: int, spender: str, wallet: str) -> int:
    _, body = get(simulator_url + "/_simulator/state")
    return max(
        (
            entry["count"]
            for entry in json.loads(body)["poll_counts"]
            if entry["chain"] == chain and entry["spender"] == spender and entry["wallet"] == wallet
        ),
        default=0,
    )


def exports_ops_dai_unlimited(metrics_url: str) -> bool:
    _, text = get(metrics_url + "/metrics")
    return any(
        line.startswith("exposure_monitor_allowance_unlimited{")
        and f'wallet="{OPS}"' in line
        and f'token="{DAI}"' in line
        and f'spender="{ROUTER}"' in line
        for line in text.splitlines()
    )


def first_times(
    checks: dict[str, Callable[[], bool]], until: str, timeout_s: float
) -> dict[str, float]:
    """Evaluates every check every 50 ms and notes (time.time()) when each first held;
    returns once ``until`` has held. Checks that never held are left out."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, check in checks.items():
            if name not in seen:
                with contextlib.suppress(OSError):
                    if check():
                        seen[name] = time.time()
        if until in seen:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {until}; seen: {seen}")


def first_sample_at(prometheus_url: str, selector: str, value: float | None = None) -> float:
    """Timestamp of the first stored sample of ``selector`` (with ``value``, if given): when
    the scrape or the rule evaluation that wrote it happened."""
    result = api(prometheus_url, "/api/v1/query", query=f"{selector}[5m]")["result"]
    stamps = [
        float(at)
        for series in result
        for at, sample in series["values"]
        if value is None or float(sample) == value
    ]
    assert stamps, f"no samples of {selector}"
    return min(stamps)


def active_alerts(prometheus_url: str, name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in api(prometheus_url, "/api/v1/alerts")["alerts"]
        if alert["labels"]["alertname"] == name
        and all(alert["labels"].get(k) == v for k, v in labels.items())
    ]


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_approval_alert_reaches_alertmanager_resolves_and_every_panel_has_data(
    tmp_path: Path,
) -> None:
    prometheus_bin = required_tool("prometheus")
    alertmanager_bin = required_tool("alertmanager", "prometheus-alertmanager")
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    logs = {name: tmp_path / f"{name}.log" for name in ("alertmanager", "prometheus", "daemon")}

    def diagnostics() -> str:
        return "".join(f"\n--- {name}.log (tail)\n{tail(log)}" for name, log in logs.items())

    with contextlib.ExitStack() as stack:
        webhook = stack.enter_context(WebhookReceiver().serving())
        am_config, receivers = alertmanager_config(
            tmp_path / "alertmanager.yml", webhook_url=webhook.url
        )
        stack.enter_context(
            server_process(
                [
                    alertmanager_bin,
                    f"--config.file={am_config}",
                    f"--storage.path={tmp_path / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                logs["alertmanager"],
                am_url + "/-/ready",
            )
        )
        # The daemon's port is chosen now so that Prometheus can be configured before it starts.
        simulator_url = stack.enter_context(simulator_process(scenario_file(tmp_path / "s.yaml")))
        scene = chain_scene(stack.enter_context(Anvil()))
        daemon_config, metrics_url = write_config(tmp_path / "config.yaml", simulator_url)
        with_discovery(daemon_config)
        prom_config = prometheus_config(
            tmp_path / "prometheus.yml",
            daemon=metrics_url.removeprefix("http://"),
            alertmanager=f"127.0.0.1:{am_port}",
        )
        stack.enter_context(
            server_process(
                [
                    prometheus_bin,
                    f"--config.file={prom_config}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                logs["prometheus"],
                prom_url + "/-/ready",
            )
        )
        loaded = api(prom_url, "/api/v1/rules")["groups"]
        shipped = yaml.safe_load(RULES.read_text())["groups"]
        assert [len(g["rules"]) for g in loaded] == [len(g["rules"]) for g in shipped]
        stack.enter_context(
            daemon_process(
                daemon_config,
                log=logs["daemon"],
                env={"EXPOSURE_MONITOR_RPC_URL_1": scene.rpc_url},
            )
        )
        try:
            run_scenario(prom_url, simulator_url, metrics_url, webhook, receivers)
            check_discovery(prom_url, metrics_url, webhook, scene)
        except AssertionError as error:
            raise AssertionError(f"{error}{diagnostics()}") from error


def run_scenario(
    prom_url: str,
    simulator_url: str,
    metrics_url: str,
    webhook: WebhookReceiver,
    receivers: set[str],
) -> None:
    dai = {"wallet": OPS, "token": DAI, "spender": ROUTER}
    alert = {"alertname": "ExposureMonitorUnlimitedApproval", **dai}

    # 1. The grant: upstream, on /metrics, in Prometheus, at the webhook.
    granted = first_times(
        {
            "upstream": lambda: poll_count(simulator_url, 1, ROUTER, OPS) >= GRANT_POLL,
            "daemon": lambda: exports_ops_dai_unlimited(metrics_url),
            "webhook": lambda: bool(webhook.alerts("firing", **alert)),
        },
        until="webhook",
        timeout_s=45,
    )
    assert {"upstream", "daemon"} <= set(granted), granted
    scraped_at = first_sample_at(
        prom_url,
        f'exposure_monitor_allowance_unlimited{{wallet="{OPS}",token="{DAI}",spender="{ROUTER}"}}',
    )
    firing_at = first_sample_at(
        prom_url,
        f'ALERTS{{alertname="ExposureMonitorUnlimitedApproval",alertstate="firing",wallet="{OPS}",token="{DAI}"}}',
    )
    up_since = first_sample_at(prom_url, 'up{job="exposure-monitor"}', value=1)
    assert up_since < granted["upstream"], "Prometheus was not scraping before the grant"
    latency_s = granted["webhook"] - granted["upstream"]

    (notification, fired), *_ = webhook.alerts("firing", **alert)
    assert notification.payload["receiver"] == "security-team"  # routed by severity=warning
    assert notification.path == "/security-team"
    assert notification.payload["groupLabels"] == {
        "alertname": "ExposureMonitorUnlimitedApproval",
        "wallet": OPS,
    }
    assert fired["labels"]["severity"] == "warning"
    assert fired["labels"]["symbol"] == "DAI"
    assert fired["annotations"]["summary"] == "Unlimited DAI approval from ops to 1inch Router v6"
    assert DAI in fired["annotations"]["description"]
    assert fired["annotations"]["runbook"]

    # The other alerts on the scenario's real data, while the DAI approval is open.
    exploited = active_alerts(
        prom_url, "ExposureMonitorExploitedSpender", wallet=OPS, spender=FURUCOMBO, token=USDC
    )
    assert [a["state"] for a in exploited] == ["firing"]
    assert exploited[0]["labels"]["symbol"] == "USDC"
    assert exploited[0]["labels"]["spender_label"] == "Furucombo (exploited)"
    assert active_alerts(prom_url, "ExposureMonitorUntrustedSpender", spender=FURUCOMBO)
    # config.example.yaml suppresses untrusted_spender for the unknown spender (risk.ignore).
    assert not active_alerts(prom_url, "ExposureMonitorUntrustedSpender", spender=UNKNOWN_SPENDER)
    at_risk = active_alerts(
        prom_url, "ExposureMonitorValueAtRisk", chain_id="1", wallet=TREASURY, spender=ROUTER
    )
    assert [a["state"] for a in at_risk] == ["firing"]
    assert active_alerts(prom_url, "ExposureMonitorApprovalGranted")[0]["state"] == "firing"
    # A finite approval to a trusted spender (treasury's 1,000 DAI to the router): no alert.
    assert not active_alerts(
        prom_url, "ExposureMonitorUnlimitedApproval", wallet=TREASURY, token=DAI
    )
    assert not active_alerts(prom_url, "ExposureMonitorUntrustedSpender", spender=ROUTER)
    for quiet in (
        "ExposureMonitorDataStale",
        "ExposureMonitorUpstreamDown",
        "ExposureMonitorDown",
        "ExposureMonitorAbsent",
        "ExposureMonitorDiscoveryEndpointDown",
        "ExposureMonitorDiscoveryStuck",
    ):
        assert all(a["state"] != "firing" for a in active_alerts(prom_url, quiet)), quiet
    wait_for(
        lambda: bool(webhook.alerts("firing", alertname="ExposureMonitorExploitedSpender")),
        10,
        "the exploited-spender alert at the webhook",
    )
    (paged, _), *_ = webhook.alerts("firing", alertname="ExposureMonitorExploitedSpender")
    assert paged.payload["receiver"] == "security-oncall"  # severity=critical
    # Inhibited by the exploited-spender alert for the same approval.
    assert not webhook.alerts(
        "firing", alertname="ExposureMonitorUntrustedSpender", spender=FURUCOMBO
    )
    assert {n.payload["receiver"] for n in webhook.notifications} <= receivers
    for rule in (r for g in api(prom_url, "/api/v1/rules")["groups"] for r in g["rules"]):
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))

    # 2. The revoke: the series leaves /metrics, the alert resolves at the webhook.
    revoked = first_times(
        {
            "upstream": lambda: poll_count(simulator_url, 1, ROUTER, OPS) >= REVOKE_POLL,
            "daemon": lambda: not exports_ops_dai_unlimited(metrics_url),
            "webhook": lambda: bool(webhook.alerts("resolved", **alert)),
        },
        until="webhook",
        timeout_s=45,
    )
    assert revoked["webhook"] > granted["webhook"]
    assert "upstream" in revoked, "resolved before the scenario revoked the approval"
    assert not active_alerts(prom_url, "ExposureMonitorUnlimitedApproval", **dai)

    print(
        "\napproval-to-alert latency: "
        f"{latency_s:.2f} s from the simulator serving the grant (poll {GRANT_POLL}) "
        "to the Alertmanager webhook receiving the firing alert\n"
        f"  daemon /metrics shows it      +{granted['daemon'] - granted['upstream']:.2f} s\n"
        f"  first Prometheus sample       +{scraped_at - granted['upstream']:.2f} s\n"
        f"  alert firing in Prometheus    +{firing_at - granted['upstream']:.2f} s\n"
        f"  webhook receives it (firing)  +{latency_s:.2f} s\n"
        f"revoke-to-resolved: {revoked['webhook'] - revoked['upstream']:.2f} s\n"
        f"settings: poll.interval_s={POLL_INTERVAL_S} (jitter 0.1 s), "
        f"scrape_interval={SCRAPE_INTERVAL}, evaluation_interval={EVALUATION_INTERVAL}, "
        "for: 0m, " + ", ".join(f"{k}={v}" for k, v in ALERTMANAGER_TIMINGS.items()),
        flush=True,
    )
    assert latency_s < MAX_APPROVAL_TO_ALERT_S

    # 3. A rejected request (a 400 is never retried): polls_failed_total and a 400 appear.
    post_json(
        simulator_url + "/_simulator/faults",
        {"endpoint": "aggregated", "chain_id": 8453, "status": 400, "count": 1},
    )
    wait_for(
        lambda: bool(
            api(
                prom_url,
                "/api/v1/query",
                query="count_over_time(exposure_monitor_polls_failed_total[1m]) >= 2",
            )["result"]
        ),
        20,
        "two scrapes of exposure_monitor_polls_failed_total",
    )

    # 4. Every dashboard query, with every variable at "All" and at one real value each.
    check_dashboard(prom_url)


def check_discovery(
    prom_url: str, metrics_url: str, webhook: WebhookReceiver, scene: ChainScene
) -> None:
    """The approval to a plain address pages on-call, and inhibits the lesser alerts of the
    same approval; the fake Approval is an unreadable pair; the RPC URL's secret is nowhere."""
    wait_for(
        lambda: bool(webhook.alerts("firing", alertname="ExposureMonitorEoaSpender")),
        20,
        "the eoa-spender alert at the webhook",
    )
    (paged, fired), *_ = webhook.alerts("firing", alertname="ExposureMonitorEoaSpender")
    assert paged.payload["receiver"] == "security-oncall"
    assert {k: fired["labels"][k] for k in ("chain_id", "wallet", "token", "spender")} == {
        "chain_id": "1",
        "wallet": OPS,
        "token": scene.token,
        "spender": PHISHER,
    }
    assert fired["labels"]["symbol"] == "PHT"
    assert "source" not in fired["labels"]
    assert "no contract code" in fired["annotations"]["summary"]
    # Untrusted and unlimited too, but notified once, as the phishing.
    assert active_alerts(prom_url, "ExposureMonitorUntrustedSpender", spender=PHISHER)
    assert active_alerts(prom_url, "ExposureMonitorUnlimitedApproval", spender=PHISHER)
    assert not webhook.alerts(
        "firing", alertname="ExposureMonitorUntrustedSpender", spender=PHISHER
    )
    assert not webhook.alerts(
        "firing", alertname="ExposureMonitorUnlimitedApproval", spender=PHISHER
    )
    sources = api(
        prom_url,
        "/api/v1/query",
        query=f'exposure_monitor_allowance_unlimited{{spender="{PHISHER}"}}',
    )["result"]
    assert [s["metric"]["source"] for s in sources] == ["chain"]
    unreadable = api(
        prom_url, "/api/v1/query", query='exposure_monitor_discovery_unreadable_pairs{chain_id="1"}'
    )["result"]
    assert [float(s["value"][1]) for s in unreadable] == [1.0]
    # Served: the endpoint as scheme://host:port, never the query that holds the secret.
    _, metrics = get(metrics_url + "/metrics")
    _, page = get(metrics_url + "/")
    endpoint = scene.rpc_url.split("?")[0].rstrip("/")
    assert f'endpoint="{endpoint}"' in metrics
    assert endpoint in page and "Discovery" in page
    for served in (metrics, page):
        assert RPC_SECRET not in served


def check_dashboard(prom_url: str) -> None:
    now = time.time()
    all_values = {name: ".*" for name in ("chain", "wallet", "spender")}
    real_values = {"chain": "1", "wallet": TREASURY, "spender": ROUTER}
    expected = {
        "chain": {"1", "8453"},
        "wallet": {TREASURY, OPS, COLD},
        "spender": {ROUTER, PERMIT2, UNKNOWN_SPENDER, FURUCOMBO},
    }
    for name, want in expected.items():
        selector, label = label_values_query(variables()[name])
        series = api(
            prom_url,
            "/api/v1/series",
            **{"match[]": substitute(selector, all_values)},
            start=now - 60,
            end=now,
        )
        assert {s[label] for s in series if label in s} >= want, name
    queries = panel_queries()
    assert len(queries) >= 15
    for values in (all_values, real_values):
        for query in queries:
            expr = substitute(query.expr, values)
            if query.instant:
                data = api(prom_url, "/api/v1/query", query=expr, time=now)
            else:
                data = api(
                    prom_url, "/api/v1/query_range", query=expr, start=now - 60, end=now, step=2
                )
            assert data["result"], f"{query.panel} ({query.ref_id}) returned nothing: {expr}"


def test_shipped_alertmanager_config_is_loaded_by_a_real_alertmanager(tmp_path: Path) -> None:
    """The example as shipped (receivers and all), not a derived copy: Alertmanager starts with
    it, becomes ready and serves it back. (``--help`` would not read the file.)"""
    alertmanager_bin = required_tool("alertmanager", "prometheus-alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with server_process(
        [
            alertmanager_bin,
            f"--config.file={ALERTMANAGER_EXAMPLE}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
        url + "/-/ready",
    ):
        _, body = get(url + "/api/v2/status")
        loaded = yaml.safe_load(json.loads(body)["config"]["original"])
    shipped = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    assert loaded["route"]["receiver"] == shipped["route"]["receiver"]
    assert loaded["route"]["group_by"] == ["alertname", "wallet"]
    assert [r["receiver"] for r in loaded["route"]["routes"]] == [
        r["receiver"] for r in shipped["route"]["routes"]
    ]
    assert len(loaded["inhibit_rules"]) == len(shipped["inhibit_rules"])
    assert "config change subscribers failed" not in (tmp_path / "alertmanager.log").read_text()
