"""`forge serve` for real: uvicorn on a random loopback port in a thread of the test, the
real pool and SmolLM2, a real FORGE_HOME; clients talk to it over TCP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from appliance.config import load_config
from appliance.digest import sha256_file
from appliance.models.default_model import shipped_gguf
from appliance.serve.app import Service
from appliance.serve.server import prepare
from tests.harness.conftest import make_home

CONTEXT = 1024  # small, so an oversize prompt is cheap to make


def serve_home(path, monkeypatch, toml: str = ""):
    """A FORGE_HOME whose models.toml holds the shipped SmolLM2 with a 1024-token context."""
    gguf = shipped_gguf()
    path.mkdir(parents=True, exist_ok=True)
    manifest = path / "models.toml"
    manifest.write_text(
        f'[bases.smol]\npath = "{gguf}"\nsha256 = "{sha256_file(gguf)}"\ncontext = {CONTEXT}\n'
    )
    return make_home(path / "home", monkeypatch, f'[models]\nmanifest = "{manifest}"\n' + toml)


def reconfigure(config, toml: str):
    """The same home with `toml` appended to its forge.toml."""
    path = config.home / "forge.toml"
    path.write_text(path.read_text() + toml)
    return load_config()


@contextmanager
def running(config, host: str = "127.0.0.1") -> Iterator[Service]:
    """`forge serve` on a free port of `host` until the block ends."""
    server, sock, service = prepare(config, host, 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("forge serve did not start")
        time.sleep(0.05)
    try:
        yield service
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
        service.pool.close()


def client(service: Service, key: str = "none"):
    from openai import OpenAI

    # no retries: a 429 or 401 must reach the test as it was answered
    return OpenAI(base_url=service.url, api_key=key, max_retries=0, timeout=300)


def served_rows(db) -> list[tuple]:
    return db.execute(
        "SELECT id, source, adapter, finish_reason, completion_tokens, output FROM model_calls "
        "ORDER BY id"
    ).fetchall()
