"""The systemd watchdog is pinged only while polls keep finishing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitor.config import parse_config
from monitor.daemon.notify import SystemdNotifier
from monitor.daemon.run import _watchdog

CONFIG = parse_config(
    {
        "wallets": [{"address": "0x5014ef5ED72014E90B82285EA7888B4A091409Ec"}],
        "chains": [
            {"id": 1, "spenders": [{"address": "0x111111125421cA6dc452d289314280a0f8842A65"}]}
        ],
        "poll": {"interval_s": 1, "timeout_s": 0.8, "jitter_s": 0},
    }
)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.setblocking(False)
        yield sock


def received(sock: socket.socket) -> list[bytes]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096))
        except BlockingIOError:
            return messages


@pytest.mark.parametrize(("stuck_for_s", "pings"), [(0.0, True), (120.0, False)])
async def test_watchdog_pings_only_while_polls_make_progress(
    notify_socket: socket.socket, tmp_path: Path, stuck_for_s: float, pings: bool
) -> None:
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "150000"}
    )
    monitor = SimpleNamespace(last_progress_monotonic=time.monotonic() - stuck_for_s)
    task = asyncio.create_task(_watchdog(notifier, monitor, CONFIG))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    task.cancel()
    messages = received(notify_socket)
    assert (b"WATCHDOG=1" in messages) is pings
    if pings:
        assert len(messages) >= 3  # every interval/3 = 50 ms


@pytest.mark.slow
def test_a_real_daemon_says_ready_pings_and_says_stopping(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    import signal

    from tests.daemon_helpers import daemon_process, get, simulator_process, wait_for, write_config

    with simulator_process() as base_url:
        config, metrics_url = write_config(tmp_path / "config.yaml", base_url)
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "600000"}
        seen: list[bytes] = []
        with daemon_process(config, env=env) as daemon:
            wait_for(lambda: get(metrics_url + "/readyz")[0] == 200, 30, "ready")
            wait_for(
                lambda: bool(seen.extend(received(notify_socket)) or b"WATCHDOG=1" in seen),
                10,
                "a ping",
            )
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=40) == 0
        seen += received(notify_socket)
    ready = next(i for i, m in enumerate(seen) if m.startswith(b"READY=1"))
    assert b"WATCHDOG=1" in seen[ready:]
    assert seen[-1] == b"STOPPING=1"
