"""systemd's notify protocol against a fake notify socket: a real AF_UNIX datagram socket
made in the test, read as systemd reads it; forged as a real process sends to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from appliance.ops.control import request
from daemon.notify import Notifier
from tests.daemon.test_forged import ROOT


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def received(sock, seconds: float = 0.5) -> list[dict]:
    """Every datagram that arrives within `seconds`, as KEY=value dicts."""
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        out.append(dict(line.split("=", 1) for line in data.splitlines()))
    return out


def test_ready_status_watchdog_and_stopping(notify_socket):
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000"})
    assert notifier.enabled and notifier.watchdog_s == 1.5  # half of WatchdogSec
    notifier.ready("idle")
    notifier.status("idle")  # unchanged: not sent again
    notifier.status("running job 3")
    notifier.watchdog()
    notifier.stopping()
    got = received(sock)
    assert got == [
        {"READY": "1", "STATUS": "idle", "MAINPID": str(os.getpid())},
        {"STATUS": "running job 3"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]


def test_abstract_socket_and_watchdog_for_another_pid(tmp_path):
    name = f"forge-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.2)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000",
                             "WATCHDOG_PID": "1"})  # fmt: skip
        assert notifier.watchdog_s is None  # the watchdog is another process's
        notifier.watchdog()
        notifier.status("idle")
        assert received(sock) == [{"STATUS": "idle"}]
    finally:
        sock.close()


def test_without_systemd_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.send(status="x") is False
    notifier.ready("idle")  # no error either


def test_forged_says_ready_once_it_answers_pings_the_watchdog_and_says_stopping(
    home,
    notify_socket,
):
    config, _ = home
    path, sock = notify_socket
    env = os.environ | {"FORGE_HOME": str(config.home), "NOTIFY_SOCKET": str(path),
                        "WATCHDOG_USEC": "1000000"}  # fmt: skip
    out = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.Popen([sys.executable, "-m", "daemon.forged"], cwd=ROOT, env=env, **out)
    try:
        sock.settimeout(30)
        first = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
        assert first["READY"] == "1" and first["MAINPID"] == str(proc.pid)
        assert request(config, "ping")["ok"]  # READY came after the socket answered
        later = received(sock, 2.5)
        assert sum(m.get("WATCHDOG") == "1" for m in later) >= 3  # every 0.5 s or so
        assert {"STATUS": "idle"} not in later  # STATUS only when it changes
        request(config, "pause")
        assert {"STATUS": "paused"} in received(sock, 2.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert {"STOPPING": "1", "STATUS": "stopping"} in received(sock, 0.5)
