"""A minimal sd_notify(3) client.

Written here rather than taken from a package: the protocol is one datagram of
``KEY=VALUE`` lines, and the daemon must never fail or block because systemd
is absent or slow.
"""

from __future__ import annotations

import os
import socket
import time

#: Variables systemd sets for the main process only. The supervisor removes
#: them from a child's environment: with NotifyAccess=main systemd would drop a
#: child's messages anyway, but log a warning for each one.
NOTIFY_ENV_VARS: tuple[str, ...] = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    """Sends state changes to the service manager named by ``$NOTIFY_SOCKET``.

    Without a socket (not started by systemd, or not ``Type=notify``) every
    call is a cheap no-op that returns False, so callers need no guard.
    """

    def __init__(self, socket_path: str | None = None) -> None:
        if socket_path is None:
            socket_path = os.environ.get("NOTIFY_SOCKET", "")
        self._path = socket_path
        # systemd writes abstract-namespace names with a leading '@'.
        self._address: str | None
        if socket_path.startswith("@"):
            self._address = "\0" + socket_path[1:]
        elif socket_path.startswith("/"):
            self._address = socket_path
        else:
            # Empty, or a transport we do not speak (vsock:...): stay silent.
            self._address = None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self._address is not None

    @property
    def socket_path(self) -> str:
        return self._path

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; False on any failure, never raises.

        Non-blocking: a full socket buffer means systemd is not reading, and
        waiting for it from the event loop would be worse than losing a ping.
        """
        if self._address is None or not lines:
            return False
        try:
            payload = "\n".join(lines).encode("utf-8")
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            sent = self._sock.sendto(payload, self._address)
        except (OSError, ValueError):
            # ValueError: text that cannot be encoded (lone surrogates).
            return False
        return sent == len(payload)

    def ready(self, status: str | None = None) -> bool:
        """Start-up, or a reload, has finished."""
        if status is None:
            return self.send("READY=1")
        return self.send("READY=1", _status_line(status))

    def reloading(self) -> bool:
        """A reload has begun; follow it with :meth:`ready`.

        systemd >= 253 ignores RELOADING=1 without the matching
        MONOTONIC_USEC, which lets it tell this reload from an older one.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Shutdown has begun, so systemd does not mistake it for a crash."""
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """One line for ``systemctl status``."""
        return self.send(_status_line(text))

    def watchdog(self) -> bool:
        """Proof of life; see :meth:`watchdog_interval` for how often."""
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds, or None if it is off for this process.

        Ping at half of it. ``$WATCHDOG_PID``, when present, names the process
        the timeout is meant for: a child that inherited the variables must
        not think it is watched.
        """
        pid = os.environ.get("WATCHDOG_PID")
        if pid is not None:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        usec = os.environ.get("WATCHDOG_USEC")
        if usec is None:
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        if value <= 0:
            return None
        return value / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_line(text: str) -> str:
    # A newline would start a new KEY=VALUE pair: the status text could set
    # READY=1 or MAINPID= by accident.
    return "STATUS=" + " ".join(text.splitlines())
