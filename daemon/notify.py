"""systemd's notify protocol (sd_notify(3)), for a Type=notify unit: READY=1 once the
daemon answers, STATUS= lines for `systemctl status`, WATCHDOG=1 keep-alives at half the
unit's WatchdogSec, STOPPING=1 on the way out. A datagram to $NOTIFY_SOCKET (a path, or
an abstract name written with a leading '@'); without that variable every call is a no-op,
so forged runs the same outside systemd."""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ: dict | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        if self.address and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        watched = usec and usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Pinged at half the interval, as sd_watchdog_enabled(3) advises.
        self.watchdog_s = int(usec) / 2e6 if watched else None
        self._status = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send KEY=value lines; False when there is no socket (or it refused)."""
        if not self.address:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), self.address)
        except OSError:
            return False  # systemd gone or restarting: the daemon goes on regardless
        return True

    def ready(self, status: str) -> None:
        self._status = status
        self.send(ready=1, status=status, mainpid=os.getpid())

    def status(self, status: str) -> None:
        """STATUS=, sent only when it changed."""
        if status != self._status:
            self._status = status
            self.send(status=status)

    def watchdog(self) -> None:
        if self.watchdog_s is not None:
            self.send(watchdog=1)

    def stopping(self) -> None:
        self.send(stopping=1, status="stopping")
