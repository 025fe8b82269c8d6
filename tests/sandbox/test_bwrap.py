"""The sandbox: no network, only named paths writable, killed whole on timeout."""

from __future__ import annotations

import os
import sys
import time

import pytest

from appliance.errors import SandboxTimeout
from appliance.sandbox import run_sandboxed

# The base interpreter: the sandbox has a private /tmp, where a checkout's venv may live.
PY = os.path.realpath(sys.executable)


def test_runs_a_command_and_returns_its_output(tmp_path):
    result = run_sandboxed(
        [PY, "-c", "print('hello'); import sys; sys.exit(3)"],
        cwd=tmp_path,
        writable=[tmp_path],
        timeout_s=60,
    )
    assert result.returncode == 3
    assert result.output.strip() == "hello"


def test_has_no_network(tmp_path):
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=3)\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    result = run_sandboxed([PY, "-c", code], cwd=tmp_path, timeout_s=60)
    assert result.output.startswith("refused"), result.output


def test_only_writable_paths_can_change(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("original")
    code = (
        f"open({str(work / 'ok.txt')!r}, 'w').write('x')\n"
        f"try:\n"
        f"    open({str(outside)!r}, 'w').write('changed')\n"
        f"except OSError as exc:\n"
        f"    print('denied', exc.errno)\n"
    )
    result = run_sandboxed(
        [PY, "-c", code], cwd=work, readable=[tmp_path], writable=[work], timeout_s=60
    )
    assert "denied" in result.output, result.output
    assert outside.read_text() == "original"
    assert (work / "ok.txt").read_text() == "x"


def test_timeout_kills_the_whole_tree(tmp_path):
    marker = tmp_path / "survived"
    grandchild = tmp_path / "grandchild.py"
    grandchild.write_text(f"import time\ntime.sleep(3)\nopen({str(marker)!r}, 'w')\n")
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(grandchild)!r}])\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with pytest.raises(SandboxTimeout):
        run_sandboxed([PY, str(parent)], cwd=tmp_path, writable=[tmp_path], timeout_s=2)
    assert time.monotonic() - started < 10
    time.sleep(4)
    assert not marker.exists()  # the grandchild died with the sandbox


def test_flood_of_output_is_truncated(tmp_path):
    from appliance.sandbox.bwrap import OUTPUT_LIMIT

    code = "import sys\nfor _ in range(4096): sys.stdout.write('x' * 1024)\n"
    result = run_sandboxed([PY, "-c", code], cwd=tmp_path, timeout_s=60)
    assert result.truncated
    assert len(result.output) == OUTPUT_LIMIT
