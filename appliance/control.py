"""Talking to forged over its control socket (FORGE_HOME/forged.sock); None when no
daemon answers, so callers work in the foreground instead."""

from __future__ import annotations

import json
import socket

from appliance.config import Config
from appliance.errors import ForgeError

SOCKET = "forged.sock"


def request(config: Config, command: str, timeout: float = 10.0, **args) -> dict | None:
    path = config.home / SOCKET
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall((json.dumps({"command": command, **args}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (ConnectionRefusedError, FileNotFoundError):
        return None  # a socket a crash left behind: no daemon
    except OSError as exc:
        raise ForgeError(
            f"forged did not answer on {path}: {exc}", "see journalctl -u forged"
        ) from exc
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ForgeError(f"forged answered something that is not JSON on {path}") from exc
