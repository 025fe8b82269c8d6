"""Hostile test code, run through the real harness and sandbox, each case on its own.

Every case plants a test module in a worktree of a demo commit and runs the suite as the
harness does. The run must end within its limits, the host must be unharmed, nothing
may be left running, and the result must say what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from appliance.harness.checkout import worktree
from appliance.harness.spec import commit_specs
from appliance.harness.testrun import env_or_failure, run_tests
from tests.harness.conftest import DEMO, ingest_package, make_home

LIMITS = """
[sandbox]
memory_mb = 512
processes = 48
output_mb = 8
"""


@pytest.fixture(scope="module")
def hostile_home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("hostile") / "home", monkeypatch, LIMITS)
        ingest_package(config, db, DEMO)
        spec = dataclasses.replace(commit_specs(config, db, "demo")[0], test_timeout_s=20)
        env = env_or_failure(config, spec)
        yield config, spec, env


def run_hostile(hostile_home, body: str, **spec_changes):
    config, spec, env = hostile_home
    spec = dataclasses.replace(spec, **spec_changes)
    marker = f"forge-hostile-{uuid.uuid4().hex}"
    started = time.monotonic()
    with worktree(config, spec.repo, spec.sha) as work:
        (work / "repo" / "tests" / "test_hostile.py").write_text(f"MARKER = {marker!r}\n" + body)
        run = run_tests(config, spec, work, env)
    return run, time.monotonic() - started, marker


def leftovers(marker: str) -> list:
    time.sleep(0.3)
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + str(proc.info["environ"] or "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if marker in text:
            found.append(proc)
    return found


HOSTILE_TEST = "tests/test_hostile.py::test_hostile"


def test_opening_a_network_connection_fails(hostile_home):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        with contextlib.suppress(OSError):
            accepted.append(server.accept())

    watcher = threading.Thread(target=accept)
    watcher.start()
    body = (
        "import socket\n"
        "def test_hostile():\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).send(b'x')\n"
    )
    run, _, _ = run_hostile(hostile_home, body)
    watcher.join()
    server.close()
    assert run.status == "ok"
    assert run.outcomes[HOSTILE_TEST] == "failed"
    assert not accepted  # the host's loopback never saw the sandbox


def test_writing_outside_the_worktree_fails(hostile_home, tmp_path):
    config = hostile_home[0]
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    body = (
        "import pathlib\n"
        "def test_hostile():\n"
        "    hits = []\n"
        f"    for path in ({str(victim)!r}, '/usr/lib/evil', '/etc/passwd', "
        f"{str(config.home / 'evil')!r}, '/evil'):\n"
        "        try:\n"
        "            pathlib.Path(path).write_text('pwned')\n"
        "            hits.append(path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    print('wrote', hits)\n"
    )
    # A write may "succeed" inside the private /tmp (where FORGE_HOME lies in tests); what
    # matters is that nothing changed on the host.
    run, _, _ = run_hostile(hostile_home, body)
    assert run.outcomes[HOSTILE_TEST] == "passed"
    assert not Path("/evil").exists()
    assert victim.read_text() == "original"
    assert not (config.home / "evil").exists()
    assert "pwned" not in Path("/etc/passwd").read_text()


def test_the_forge_database_cannot_be_read(hostile_home):
    config = hostile_home[0]
    assert config.db_path.is_file()
    body = (
        "def test_hostile():\n"
        f"    data = open({str(config.db_path)!r}, 'rb').read()\n"
        "    assert data\n"
    )
    run, _, _ = run_hostile(hostile_home, body)
    assert run.outcomes[HOSTILE_TEST] == "failed"
    assert "FileNotFoundError" in run.output_tail


def test_a_fork_bomb_is_stopped(hostile_home):
    body = (
        "import os, time\n"
        "def test_hostile():\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            time.sleep(0.01)\n"
    )
    run, took, marker = run_hostile(hostile_home, body)
    assert run.status == "limit", run
    assert "more processes than its limit" in run.detail
    assert took < 20
    assert not leftovers(marker)


def test_unbounded_allocation_is_stopped(hostile_home):
    body = (
        "def test_hostile():\n"
        "    hoard = []\n"
        "    while True:\n"
        "        hoard.append(bytearray(32 << 20))\n"
    )
    run, took, _ = run_hostile(hostile_home, body)
    # Either the address-space limit turns it into a MemoryError inside the test, or the
    # supervisor kills the tree for its resident memory; both are reported as such.
    if run.status == "ok":
        assert run.outcomes[HOSTILE_TEST] == "failed"
    else:
        assert run.status == "out_of_memory", run
    assert took < 20
    assert psutil.virtual_memory().available > 256 << 20


def test_an_endless_loop_is_stopped_at_the_wall_time(hostile_home):
    body = "def test_hostile():\n    while True:\n        pass\n"
    run, took, marker = run_hostile(hostile_home, body, test_timeout_s=3)
    assert run.status == "timeout", run
    assert "passed its 3 s" in run.detail
    assert took < 10
    assert not leftovers(marker)


def test_a_double_forked_child_does_not_outlive_the_run(hostile_home):
    body = (
        "import os, subprocess, sys\n"
        "def test_hostile():\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            os.execv('/bin/sh', ['/bin/sh', '-c', f'sleep 300 # {MARKER}'])\n"
        "        os._exit(0)\n"
        "    os.wait()\n"
    )
    run, _, marker = run_hostile(hostile_home, body)
    assert run.status == "ok", run
    assert run.outcomes[HOSTILE_TEST] == "passed"
    assert not leftovers(marker)


def test_printing_gigabytes_is_stopped(hostile_home):
    body = (
        "import os\n"
        "def test_hostile():\n"
        "    block = b'spam' * 262144\n"
        "    for _ in range(4096):\n"
        "        os.write(1, block)\n"
    )
    run, took, _ = run_hostile(hostile_home, body, test_command=("pytest", "-q", "-s"))
    assert run.status == "limit", run
    assert "more output than its limit" in run.detail
    assert took < 20
