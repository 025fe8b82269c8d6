"""The control socket: FORGE_HOME/forged.sock, one JSON request and one JSON answer per
connection. Owner and group only (0660); a socket left by a crash is replaced on start,
a socket a live daemon answers on is not."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ForgeError

MAX_REQUEST = 64 * 1024


class DaemonRunning(ForgeError):
    """Another forged already answers on this FORGE_HOME's socket."""


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


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                raise ValueError("a request is a JSON object with a command")
            answer = self.server.dispatch(request)
        except ForgeError as exc:  # said back to the client with its hint and exit code
            answer = {"ok": False, "error": exc.message, "hint": exc.hint,
                      "exit_code": exc.exit_code}  # fmt: skip
        except ValueError as exc:
            answer = {"ok": False, "error": str(exc), "exit_code": 2}
        self.wfile.write((json.dumps(answer, default=str) + "\n").encode())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(path: Path, dispatch: Callable[[dict], dict]) -> _Server:
    """Bind the socket (replacing a stale one) and answer in a background thread."""
    if path.exists():
        if answers(path):
            raise DaemonRunning(
                f"a daemon already answers on {path}", "stop it first (systemctl stop forged)"
            )
        path.unlink()  # left by a crash
    old = os.umask(0o117)
    try:
        server = _Server(str(path), _Handler)
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    server.dispatch = dispatch
    threading.Thread(target=server.serve_forever, name="forged-control", daemon=True).start()
    return server
