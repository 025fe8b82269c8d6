"""The control socket under hostile clients: every malformed request is answered with an
error and the daemon goes on answering, with no traceback in its log; nothing malformed is
queued; slow and half-sent clients are cut off; threads stay bounded."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time

import pytest

from appliance.ops import control, jobs
from appliance.ops.control import BadRequest, parse_request, request
from daemon.control import serve
from tests.daemon.test_forged import start, stop


def raw(path, data: bytes, timeout: float = 10) -> dict:
    """Send `data` as is and read the answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer, f"no answer to {data[:60]!r}"
    return json.loads(answer)


BAD = {
    # the four
    "promote-without-stage": (b'{"command": "promote", "version": 1}\n', "promote.stage"),
    "rollback-without-stage": (b'{"command": "rollback"}\n', "rollback.stage"),
    "cancel-list-id": (b'{"command": "cancel", "id": [1, 2]}\n', "cancel.id"),
    "deep-nesting": (b"[" * 60_000 + b"\n", "nests deeper"),  # RecursionError before
    "deep-nesting-100k": (b"[" * 100_000 + b"\n", "longer than"),
    "nesting-in-args": (
        b'{"command": "run", "kind": "backup", "args": ' + b'{"a": ' * 9 + b"1" + b"}" * 10 + b"\n",
        "nests deeper",
    ),
    # and the rest of what a client can send
    "run-backup-junk-args": (
        b'{"command": "run", "kind": "backup", "args": {"rm": "-rf /"}}\n',
        "run.backup.args.rm",
    ),
    "run-promote-string-version": (
        b'{"command": "run", "kind": "promote", "args": {"stage": "s", "version": "1"}}\n',
        "run.promote.args.version",
    ),
    "run-unknown-kind": (b'{"command": "run", "kind": "rm"}\n', "'rm'"),
    "cancel-bool-id": (b'{"command": "cancel", "id": true}\n', "cancel.id"),
    "cancel-huge-id": (b'{"command": "cancel", "id": 1' + b"0" * 30 + b"}\n", "cancel.id"),
    "long-number": (b'{"command": "cancel", "id": ' + b"9" * 5000 + b"}\n", "not JSON"),
    "unknown-command": (b'{"command": "shutdown"}\n', "'shutdown'"),
    "unknown-key": (b'{"command": "ping", "then": "rm"}\n', "ping.then"),
    "not-an-object": (b'["ping"]\n', "valid dictionary"),
    "not-json": (b"GET / HTTP/1.0\r\n\r\n", "not JSON"),
    "binary": (bytes(range(256)) + b"\n", "not JSON"),
    "too-long": (b'{"command": "ping", "x": "' + b"a" * 100_000 + b'"}\n', "longer than"),
    "empty": (b"\n", "not JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_parse_request_refuses(name):
    line, words = BAD[name]
    with pytest.raises(BadRequest) as caught:
        parse_request(line.rstrip(b"\n"))
    assert words in caught.value.message and caught.value.exit_code == 2


def test_the_protocol_knows_every_job_kind():
    from appliance.ops.work import KINDS

    assert set(control.RUN_KINDS) == set(KINDS)
    for kind in KINDS:  # each kind is a `run` the schema takes, with the args forge sends
        args = {"stage": "scope", "version": 1} if kind == "promote" else {}
        assert parse_request(json.dumps({"command": "run", "kind": kind, "args": args}).encode())


def test_a_real_forged_answers_every_bad_request_and_goes_on(home):
    """Each bad request gets {"ok": false, ...} with exit code 2; ping still answers after
    each; nothing is queued; the daemon's log has one line per refusal, no traceback."""
    from click.testing import CliRunner

    from appliance.cli import cli

    config, db = home
    proc = start(config)
    path = config.home / control.SOCKET
    try:
        for name, (line, words) in sorted(BAD.items()):
            answer = raw(path, line)
            assert answer["ok"] is False and answer["exit_code"] == 2, (name, answer)
            assert words in answer["error"], (name, answer)
            assert request(config, "ping") == {"ok": True}, name
        assert jobs.jobs(db) == []  # not even the backup with junk arguments was queued
        # Through the CLI: the daemon's refusal, with its exit code, and no traceback.
        runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
        out = runner.invoke(cli, ["job", "run", "backup", "--arg", "junk=1"])
        assert out.exit_code == 2 and "run.backup.args.junk" in out.output, out.output
        assert jobs.jobs(db) == []
    finally:
        stop(proc)
    log = proc.stdout.read()
    assert "Traceback" not in log and "Error" not in log.replace("refused a request", "")
    assert log.count("control socket: refused a request") == len(BAD) + 1


@pytest.fixture
def server(home, tmp_path):
    """forged's socket server with a real Daemon behind it, short timeout, 8 threads."""
    from daemon.forged import Daemon

    config, _ = home
    path = tmp_path / "s.sock"  # a short path: AF_UNIX names are limited to 108 bytes
    before = threading.active_count()
    srv = serve(path, Daemon(config).dispatch, read_timeout_s=1.0, max_connections=8)
    yield path, before
    srv.shutdown()
    srv.server_close()


def _open_half_sent(path, n: int) -> list[socket.socket]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    clients = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        for _ in range(500):  # the backlog is full for a moment: try again, as a flood would
            try:
                s.connect(str(path))
                break
            except BlockingIOError:
                time.sleep(0.01)
        # A connection already answered "busy" and closed refuses the write; its answer is
        # still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b'{"command": "sta')  # and never the rest
        clients.append(s)
    return clients


def _answer_of(s: socket.socket) -> dict | None:
    try:
        data = s.recv(65536)
    except TimeoutError:
        return None
    return json.loads(data) if data else None


def test_500_half_sent_connections_hold_at_most_the_bound_and_are_cut_off(server):
    path, before = server
    started = time.monotonic()
    clients = _open_half_sent(path, 500)
    try:
        peak = threading.active_count() - before
        # One thread serves the socket; at most 8 more answer requests (before: 506).
        assert peak <= 1 + 8, peak
        deadline = time.monotonic() + 15
        while threading.active_count() - before > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert threading.active_count() - before == 1  # every held connection was let go
        assert time.monotonic() - started < 15
        answers = [_answer_of(s) for s in clients]
        busy = [a for a in answers if a and "busy" in a["error"]]
        slow = [a for a in answers if a and "no whole request" in a["error"]]
        assert len(busy) >= 500 - 8 and len(busy) + len(slow) == 500
        assert all(a["ok"] is False for a in answers)
    finally:
        for s in clients:
            s.close()
    assert raw(path, b'{"command": "status"}\n')["ok"] is True  # and it answers still


def test_a_trickling_client_is_cut_off_at_the_deadline(server):
    """The timeout is for the whole request: a byte every 0.3 s does not keep it open."""
    path, _ = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        started = time.monotonic()
        answer = None
        for byte in b'{"command": "status"}':
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.3)
            s.setblocking(False)
            try:
                data = s.recv(65536)
            except BlockingIOError:
                data = None
            s.setblocking(True)
            s.settimeout(5)
            if data:
                answer = json.loads(data)
                break
        took = time.monotonic() - started
    assert answer is not None and "no whole request within 1 s" in answer["error"]
    assert took < 3
