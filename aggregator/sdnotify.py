"""The systemd notify protocol, without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the daemon
runs the same under a terminal, a container or a unit with ``Type=notify``.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("aggregator.sdnotify")


def notify(*lines: str) -> bool:
    """Send ``lines`` (``READY=1``, ``STATUS=...``) to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(lines).encode())
    except OSError as exc:
        log.warning("sdnotify.failed", socket=os.environ.get("NOTIFY_SOCKET"), error=str(exc))
        return False
    return True


def watchdog_period() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when off."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000
