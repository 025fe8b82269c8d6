"""`forge serve` as an operator runs it: a real process, port 0, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.serve.conftest import serve_home


@pytest.mark.parametrize(
    "command", [["serve"], ["serve", "keys"], ["serve", "keys", "add"], ["serve", "keys", "list"],
                ["serve", "keys", "revoke"]], ids=" ".join)  # fmt: skip
def test_every_serve_command_has_help(command):
    proc = subprocess.run([sys.executable, "-m", "appliance", *command, "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stderr


def test_port_0_picks_a_free_port_prints_it_and_sigterm_stops_the_server(tmp_path, monkeypatch):
    config, db = serve_home(tmp_path / "cli", monkeypatch)
    db.close()
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FORGE_HOME": str(config.home)})  # fmt: skip
    try:
        first = proc.stdout.readline()
        found = re.search(r"listening on (http://127\.0\.0\.1:(\d+)/v1)", first)
        assert found and int(found[2]) > 0, first + proc.stderr.read()
        with urllib.request.urlopen(found[1].removesuffix("/v1") + "/health", timeout=30) as r:
            assert json.loads(r.read())["status"] == "ok"
        deadline = time.monotonic() + 10
        while not (config.home / "serve.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads((config.home / "serve.json").read_text())["url"] == found[1]
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: systemd reads that
        # as a clean stop
        assert proc.wait(60) in (0, -signal.SIGTERM)
        assert not (config.home / "serve.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
