"""Starting `forge serve`: the bind rule, the listening socket, the one pool, uvicorn.

Bound to loopback by default. Any other address needs API keys: a server refuses to start
beyond loopback without one (and, with keys, requires them on loopback too). The socket
is bound before uvicorn starts, so port 0 gives a free port that is known, and printed,
before the first request. With `serve.gpus` the process sees only those GPUs (set before
llama.cpp loads), which forged's heavy jobs then leave alone.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from appliance.config import Config
from appliance.errors import ConfigError, ForgeError
from appliance.models.manifest import read_manifest
from appliance.serve.app import Service, make_app
from appliance.serve.keys import KeyRing
from appliance.serving.calllog import SERVED, CallLog
from appliance.serving.placement import Gpu, detect_gpus
from appliance.serving.pool import ModelPool


class ServeRefused(ForgeError):
    """`forge serve` will not start as asked (a bind beyond loopback without keys, a port
    in use)."""


@dataclass(frozen=True)
class Listening:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve beyond the box
        return False


def check_bind(host: str, keys: KeyRing) -> None:
    if not is_loopback(host) and not keys.keys():
        raise ServeRefused(
            f"forge serve binds {host}, beyond loopback, and no API key exists",
            "add one first (forge serve keys add NAME), or bind 127.0.0.1",
        )


def bind(host: str, port: int) -> tuple[socket.socket, Listening]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServeRefused(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServeRefused(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "another process holds the port: choose another with --port (0: any free one)",
        ) from exc
    return sock, Listening(host, sock.getsockname()[1])


def serving_gpus(config: Config) -> list[Gpu] | None:
    """The GPUs the pool may place bases on: `serve.gpus` (renumbered as CUDA will see
    them once CUDA_VISIBLE_DEVICES names only those), or None: the pool's own choice."""
    held = config.settings.serve.gpus
    if not held:
        return None
    found = {gpu.index: gpu for gpu in detect_gpus()}
    missing = [i for i in held if i not in found]
    if missing:
        raise ConfigError(
            f"serve.gpus names GPU(s) {missing}; this box has {sorted(found) or 'none'}",
            "fix serve.gpus in forge.toml (empty: the pool places the bases itself)",
        )
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order NVML numbers them in
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, held))
    return [dataclasses.replace(found[i], index=n) for n, i in enumerate(held)]


def prepare(config: Config, host: str, port: int) -> tuple[uvicorn.Server, socket.socket, Service]:
    """Everything `forge serve` needs, checked, the socket bound and the bases loaded; the
    caller runs `server.run(sockets=[sock])`."""
    keys = KeyRing(config.serve_keys_file)
    check_bind(host, keys)
    manifest = read_manifest(config.models_manifest)
    pool = ModelPool(
        manifest, log=CallLog(config.db_path, source=SERVED), gpus=serving_gpus(config)
    )
    for role in sorted(set(manifest.roles)):
        pool.base_for(role)  # loaded now: a bad model file stops the start, not a request
    sock, listening = bind(host, port)
    service = Service(config, pool, keys, url=listening.url, loopback=is_loopback(host))
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(service),
            http="h11",
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )  # fmt: skip
    )
    return server, sock, service


def run(config: Config, host: str, port: int, on_ready: Callable[[Service], None]) -> None:
    """Serve until SIGTERM or SIGINT; `on_ready` is told where, before the first request."""
    server, sock, service = prepare(config, host, port)
    try:
        on_ready(service)
        server.run(sockets=[sock])
    finally:
        sock.close()
        service.pool.close()
