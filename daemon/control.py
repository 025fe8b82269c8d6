"""The control socket's server: FORGE_HOME/forged.sock, one JSON request and one JSON answer
per connection (the protocol: appliance.ops.control). Owner and group only (0660); a socket
left by a crash is replaced on start, a socket a live daemon answers on is not.

Whatever a client sends, it gets an answer or is hung up on, and the daemon goes on: a
request must arrive whole within READ_TIMEOUT_S, fit MAX_REQUEST_BYTES and parse as one of
the protocol's requests, else it is answered with {"ok": false, "error": ...}. At most
MAX_CONNECTIONS are served at once, each in its own thread; a client beyond that is told
forged is busy, at once, instead of getting a thread of its own.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ForgeError
from appliance.ops.control import MAX_REQUEST_BYTES, Request, parse_request, refusal

log = logging.getLogger("forged")
READ_TIMEOUT_S = 10.0  # a whole request, not each piece of it: a trickle is cut off too
MAX_CONNECTIONS = 16  # requests served at once; each is a thread
LISTEN_BACKLOG = 128  # a burst of connects waits in the kernel, not in connect()


class DaemonRunning(ForgeError):
    """Another forged already answers on this FORGE_HOME's socket."""


class SlowClient(ForgeError):
    """A client that did not send a whole request line within the read timeout."""


def answers(path: Path) -> bool:
    """Whether a daemon answers on the socket at `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(b'{"command": "ping"}\n')
            return bool(s.recv(1024))
    except OSError:
        return False


def _read_line(conn: socket.socket, timeout_s: float) -> bytes:
    """The first line the client sends (what came before it hung up, if it sent no
    newline), read within `timeout_s` in all and cut off past MAX_REQUEST_BYTES."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SlowClient(f"no whole request within {timeout_s:g} s: hung up")
        conn.settimeout(left)
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue  # the deadline check above says so
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server
        try:
            line = _read_line(self.request, server.read_timeout_s)
            answer = server.answer(line)
        except SlowClient as exc:
            answer = refusal(exc)
        self.request.settimeout(server.read_timeout_s)  # a client that never reads: cut off
        self.request.sendall((json.dumps(answer, default=str) + "\n").encode())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, path: Path, dispatch: Callable[[Request], dict], *,
                 read_timeout_s: float, max_connections: int) -> None:  # fmt: skip
        self.dispatch = dispatch
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(str(path), _Handler)

    def answer(self, line: bytes) -> dict:
        """The answer to one request line: dispatch's, or an error; never an exception."""
        try:
            request = parse_request(line)
        except ForgeError as exc:
            log.warning("control socket: refused a request: %s", exc.message)
            return refusal(exc)
        try:
            return self.dispatch(request)
        except ForgeError as exc:  # said back to the client with its hint and exit code
            return refusal(exc)
        except Exception as exc:  # a bug in one command must not cost the daemon its socket
            log.error("control socket: %s failed: %s: %s", request.command,
                      type(exc).__name__, exc)  # fmt: skip
            return {"ok": False, "error": f"forged failed on {request.command}: "
                    f"{type(exc).__name__}: {exc}", "hint": "see journalctl -u forged",
                    "exit_code": 1}  # fmt: skip

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)  # a thread, which frees the slot
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        busy = ForgeError(f"forged is busy: {self.max_connections} requests are being answered",
                          "try again in a few seconds")  # fmt: skip
        try:
            request.settimeout(0.5)  # a fresh connection's buffer is empty: this never waits
            request.sendall((json.dumps(refusal(busy)) + "\n").encode())
        except OSError:
            pass  # the client is gone already; nothing to tell it
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        # A client that hung up or never read its answer: one line, not a traceback.
        exc = sys.exc_info()[1]
        log.info("control socket: a client was dropped: %s", exc or "unknown error")


def serve(path: Path, dispatch: Callable[[Request], dict], *,
          read_timeout_s: float = READ_TIMEOUT_S,
          max_connections: int = MAX_CONNECTIONS) -> _Server:  # fmt: skip
    """Bind the socket (replacing a stale one) and answer in a background thread."""
    if path.exists():
        if answers(path):
            raise DaemonRunning(
                f"a daemon already answers on {path}", "stop it first (systemctl stop forged)"
            )
        path.unlink()  # left by a crash
    old = os.umask(0o117)
    try:
        server = _Server(path, dispatch, read_timeout_s=read_timeout_s,
                         max_connections=max_connections)  # fmt: skip
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    threading.Thread(target=server.serve_forever, name="forged-control", daemon=True).start()
    return server
