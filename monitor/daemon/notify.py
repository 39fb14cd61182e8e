"""The systemd notification protocol (``sd_notify(3)``) in plain Python, without libsystemd.

systemd gives a ``Type=notify`` service the address of its notification socket in
``NOTIFY_SOCKET``; the service reports its state there as newline-separated ``NAME=value``
lines, one datagram per report. Outside systemd the variable is unset and every report is a
no-op, so the daemon has no special case for running in a terminal.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Reports the daemon's state to systemd over ``$NOTIFY_SOCKET``.

    Built from an environment mapping (``os.environ`` in the daemon, a dict in tests); ``pid``
    is the process the watchdog variables are checked against, ``os.getpid()`` by default.
    A report is one non-blocking datagram to a local socket, so it is safe to send from the
    event loop. A report that cannot be delivered (no socket, nobody listening, queue full) is
    logged at debug level and dropped: a lost notification must not take the daemon down.
    """

    def __init__(self, environ: Mapping[str, str], *, pid: int | None = None) -> None:
        own_pid = os.getpid() if pid is None else pid
        self._address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self._watchdog_interval_s = _watchdog_interval_s(environ, own_pid)

    @property
    def enabled(self) -> bool:
        """Whether reports go anywhere (``NOTIFY_SOCKET`` names a usable socket)."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """systemd's watchdog timeout (``WatchdogSec=``) in seconds, or None without one.

        None too when ``WATCHDOG_PID`` names another process: the watchdog is then not ours to
        feed. Send :meth:`watchdog` at least every half of this interval.
        """
        return self._watchdog_interval_s

    def ready(self) -> None:
        """Start-up is complete (``READY=1``): systemd marks the service started."""
        self.notify(READY=1)

    def stopping(self) -> None:
        """Graceful shutdown has begun (``STOPPING=1``)."""
        self.notify(STOPPING=1)

    def watchdog(self) -> None:
        """The daemon is alive and making progress (``WATCHDOG=1``)."""
        self.notify(WATCHDOG=1)

    def status(self, text: str) -> None:
        """A one-line status for ``systemctl status`` (``STATUS=``); line breaks become spaces."""
        self.notify(STATUS=" ".join(text.splitlines()))

    def notify(self, **fields: str | int) -> None:
        """Send ``fields`` as one report, e.g. ``notify(READY=1, STATUS="polling")``.

        Names are the upper-case variables of ``sd_notify(3)``. A lower-case name or a value
        with a line break is a programming error and raises ``ValueError``, even when reports
        are disabled; a failed send never raises.
        """
        lines = [f"{name}={_field_value(name, value)}" for name, value in fields.items()]
        if self._address is None or not lines:
            return
        message = "\n".join(lines)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # systemd drains its socket promptly; if it ever cannot, drop the report
                # rather than block the event loop.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.debug("systemd notification %r not sent: %s", message, exc)


def _field_value(name: str, value: str | int) -> str:
    if not name.isupper():
        raise ValueError(f"notification field {name!r}: names are upper case (READY, STATUS)")
    text = str(int(value)) if isinstance(value, bool) else str(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"notification field {name}: value contains a line break: {text!r}")
    return text


def _socket_address(notify_socket: str) -> str | None:
    """The ``sendto`` address for ``NOTIFY_SOCKET``: a path, or ``@name`` in the abstract
    namespace (Linux writes that with a leading NUL byte)."""
    if notify_socket.startswith("/"):
        return notify_socket
    if notify_socket.startswith("@") and len(notify_socket) > 1:
        return "\0" + notify_socket[1:]
    if notify_socket:
        # e.g. systemd's vsock: addresses for virtual machines, which this daemon does not need.
        log.warning(
            "NOTIFY_SOCKET=%r is not a supported address; not notifying systemd", notify_socket
        )
    return None


def _watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """``sd_watchdog_enabled(3)``: ``WATCHDOG_USEC`` unless ``WATCHDOG_PID`` is another process."""
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None and _parse_int(watchdog_pid) != pid:
        return None
    usec = _parse_int(environ.get("WATCHDOG_USEC", ""))
    if usec is None or usec <= 0:
        return None
    return usec / 1_000_000


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
