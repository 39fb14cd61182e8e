"""The systemd unit, checked by systemd's own tools, and the notify protocol on real sockets.

``systemd-analyze`` is required: without it these tests fail rather than skip, so a CI image
that lost it cannot pass silently.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.config.secrets import CREDENTIAL_NAME
from monitor.daemon import notify
from monitor.daemon.notify import SystemdNotifier

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "exposure-monitor.service"
INSTALLED_COMMAND = "/usr/local/bin/exposure-monitor"
# What `systemd-analyze security` rates the unit, in the tenths its --threshold takes
# (11 = "1.1"). A change that weakens the sandbox fails; one that strengthens it should
# lower this number.
SECURITY_THRESHOLD = 11

# ---------------------------------------------------------------------------- the unit


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("systemd-analyze")
    assert executable is not None, "systemd-analyze not found: install systemd to run these tests"
    return subprocess.run(
        [executable, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
    )


def installed_console_script() -> Path:
    # The virtual environment's bin/ holds the interpreter running the tests (not resolved: a
    # venv's python is a symlink to the base interpreter).
    beside_python = Path(sys.executable).parent / "exposure-monitor"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("exposure-monitor")
    assert found is not None, "the exposure-monitor console script is not installed"
    return Path(found)


def directives(unit_text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; enough for this unit's syntax."""
    found = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit under its own name, with ExecStart= at the installed console script:
    ``verify`` refuses a command that does not exist."""
    text = UNIT.read_text(encoding="utf-8")
    installed = f"ExecStart={INSTALLED_COMMAND} "
    assert text.count(installed) == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(installed, f"ExecStart={installed_console_script()} "))
    return copy


def unit_complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if UNIT.name in line]


def test_unit_passes_systemd_analyze_verify(unit_copy: Path) -> None:
    result = systemd_analyze("verify", str(unit_copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert unit_complaints(result) == []


def test_verify_reports_a_misspelt_directive(unit_copy: Path) -> None:
    # The check above relies on verify naming the unit in its warnings (exit status 0).
    text = unit_copy.read_text(encoding="utf-8")
    assert "ProtectHome=yes\n" in text
    unit_copy.write_text(text.replace("ProtectHome=yes\n", "ProtectHome=yes\nProtectHomes=yes\n"))
    result = systemd_analyze("verify", str(unit_copy))
    assert any("ProtectHomes" in line for line in unit_complaints(result))


def test_unit_security_exposure_stays_at_its_measured_level(unit_copy: Path) -> None:
    result = systemd_analyze(
        "security", "--offline=true", f"--threshold={SECURITY_THRESHOLD}", str(unit_copy)
    )
    output = result.stdout + result.stderr
    match = re.search(rf"Overall exposure level for {re.escape(UNIT.name)}: (\d+\.\d)", output)
    assert match is not None, output
    exposure = match.group(1)
    print(f"systemd-analyze security: exposure {exposure}, threshold {SECURITY_THRESHOLD / 10}")
    weaknesses = "\n".join(line for line in output.splitlines() if line.startswith("✗"))
    assert result.returncode == 0, f"exposure {exposure} > {SECURITY_THRESHOLD / 10}:\n{weaknesses}"
    assert round(float(exposure) * 10) <= SECURITY_THRESHOLD


def test_a_weaker_sandbox_exceeds_the_threshold(unit_copy: Path) -> None:
    text = unit_copy.read_text(encoding="utf-8")
    assert "PrivateUsers=yes\n" in text
    unit_copy.write_text(text.replace("PrivateUsers=yes\n", ""))
    result = systemd_analyze(
        "security", "--offline=true", f"--threshold={SECURITY_THRESHOLD}", str(unit_copy)
    )
    assert result.returncode != 0, result.stdout


def test_unit_matches_what_the_daemon_reads() -> None:
    found = directives(UNIT.read_text(encoding="utf-8"))
    service = {key: value for section, key, value in found if section == "Service"}
    assert service["ExecStart"] == (
        f"{INSTALLED_COMMAND} run --config /etc/exposure-monitor/config.yaml"
    )
    assert service["LoadCredential"] == (
        f"{CREDENTIAL_NAME}:/etc/exposure-monitor/{CREDENTIAL_NAME}"
    )
    # $STATE_DIRECTORY, where the default SQLite database goes.
    assert service["StateDirectory"] == "exposure-monitor"
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"


def test_restart_policy_gives_up_on_a_config_error_only() -> None:
    """Exit 2 (a config error) needs a person; exit 5 (the listen address busy or refused)
    and every other failure are restarted."""
    from monitor.cli import EXIT_CONFIG, EXIT_LISTEN, EXIT_STORE, EXIT_UPSTREAM

    service = {
        key: value
        for section, key, value in directives(UNIT.read_text(encoding="utf-8"))
        if section == "Service"
    }
    assert service["Restart"] == "on-failure"
    prevented = {int(status) for status in service["RestartPreventExitStatus"].split()}
    assert prevented == {EXIT_CONFIG}
    assert not {EXIT_LISTEN, EXIT_STORE, EXIT_UPSTREAM} & prevented


# ---------------------------------------------------------------------- the notifier


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's, and its NOTIFY_SOCKET value."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if request.param == "path":
            path = str(tmp_path / "notify")
            assert len(path) < 100, "AF_UNIX paths are limited to 107 bytes"
            sock.bind(path)
            notify_socket = path
        else:
            name = f"exposure-monitor-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            notify_socket = "@" + name
        sock.settimeout(5)
        yield sock, notify_socket


def received(sock: socket.socket, count: int) -> list[bytes]:
    datagrams = [sock.recv(4096) for _ in range(count)]
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
    return datagrams


def test_each_report_arrives_as_one_exact_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, notify_socket = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket})
    assert notifier.enabled

    notifier.ready()
    notifier.status("polling 3 chains")
    notifier.watchdog()
    notifier.stopping()
    notifier.notify(READY=True, STATUS="up", EXTEND_TIMEOUT_USEC=5_000_000)

    assert received(sock, 5) == [
        b"READY=1",
        b"STATUS=polling 3 chains",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"READY=1\nSTATUS=up\nEXTEND_TIMEOUT_USEC=5000000",
    ]


def test_status_keeps_to_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, notify_socket = listener
    SystemdNotifier({"NOTIFY_SOCKET": notify_socket}).status("poll failed:\nchain 1\r\ntimeout")
    assert received(sock, 1) == [b"STATUS=poll failed: chain 1 timeout"]


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}], ids=["unset", "empty"])
def test_without_notify_socket_nothing_is_sent(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", no_socket)
    notifier = SystemdNotifier(environ)
    assert not notifier.enabled
    notifier.ready()
    notifier.status("polling")
    notifier.watchdog()
    notifier.stopping()


@pytest.mark.parametrize("address", ["vsock:2:1234", "relative/notify", "@"])
def test_an_unsupported_notify_socket_is_reported_once_and_ignored(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": address})
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
    assert [(r.levelno, address in r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, True)
    ]


def vanished_unlinked(tmp_path: Path) -> str:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    path.unlink()
    return str(path)  # ENOENT


def vanished_stale(tmp_path: Path) -> str:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    return str(path)  # the file is left, nobody listens: ECONNREFUSED


def vanished_abstract(tmp_path: Path) -> str:
    return f"@exposure-monitor-test-{uuid.uuid4().hex}"  # nobody bound: ECONNREFUSED


@pytest.mark.parametrize("vanished", [vanished_unlinked, vanished_stale, vanished_abstract])
def test_a_send_to_a_vanished_socket_is_logged_not_raised(
    vanished: Callable[[Path], str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=notify.__name__)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": vanished(tmp_path)})
    notifier.ready()
    notifier.watchdog()
    assert [r.getMessage().split(" not sent")[0] for r in caplog.records] == [
        "systemd notification 'READY=1'",
        "systemd notification 'WATCHDOG=1'",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_a_full_socket_drops_reports_instead_of_blocking(
    listener: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, notify_socket = listener
    caplog.set_level(logging.DEBUG, logger=notify.__name__)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket})
    for _ in range(100):  # nobody reads, and the queue holds 10 datagrams by default
        notifier.watchdog()
    assert caplog.records, "every report was queued: the socket never filled"
    assert sock.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    "fields", [{"ready": 1}, {"STATUS": "two\nlines"}, {"STATUS": "a\rb"}], ids=repr
)
@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": "/nonexistent/notify"}])
def test_malformed_fields_are_a_programming_error(
    fields: dict[str, str | int], environ: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="notification field"):
        SystemdNotifier(environ).notify(**fields)


OUR_PID = 4242


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "900000000"}, 900.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(OUR_PID)}, 1.5),
        ({"WATCHDOG_USEC": "900000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "900000000", "WATCHDOG_PID": ""}, None),
        ({"WATCHDOG_USEC": "900000000", "WATCHDOG_PID": "main"}, None),
        ({"WATCHDOG_PID": str(OUR_PID)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-1000000"}, None),
        ({"WATCHDOG_USEC": "15min"}, None),
    ],
)
def test_watchdog_interval_follows_sd_watchdog_enabled(
    environ: dict[str, str], interval_s: float | None
) -> None:
    assert SystemdNotifier(environ, pid=OUR_PID).watchdog_interval_s == interval_s


def test_watchdog_pid_defaults_to_this_process() -> None:
    ours = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    theirs = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(ours).watchdog_interval_s == 2.0
    assert SystemdNotifier(theirs).watchdog_interval_s is None
