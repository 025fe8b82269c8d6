"""The bubblewrap sandbox: no network, a minimal read-only root, limits, whole-tree kills."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from appliance.config import load_config
from appliance.errors import SandboxError
from appliance.sandbox import (
    Bind,
    BwrapBackend,
    Limits,
    SandboxRequest,
    interpreter_prefix,
    run_sandboxed,
)

# The base interpreter: Forge's own venv is not visible inside the sandbox.
PY = os.path.realpath(sys.executable)


def run(config, code: str, cwd: Path, *, binds=(), **limits):
    request = SandboxRequest(
        argv=(PY, "-c", code),
        cwd=cwd,
        binds=(Bind(cwd, writable=True), *binds),
        limits=Limits(**({"wall_s": 60} | limits)),
    )
    return run_sandboxed(request, config)


@pytest.fixture
def work(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    return path


def test_runs_a_command_and_returns_its_output(forge_home, work):
    result = run(forge_home, "print('hello'); import sys; sys.exit(3)", work)
    assert result.returncode == 3
    assert result.output.strip() == "hello"
    assert result.limit is None and result.backend == "bwrap"


def test_has_no_network(forge_home, work):
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=3)\n"
        "except OSError as exc:\n"
        "    print('refused', exc.errno)\n"
    )
    result = run(forge_home, code, work)
    assert result.output.startswith("refused"), result.output


def test_only_writable_binds_can_change(forge_home, tmp_path, work):
    outside = tmp_path / "outside.txt"
    outside.write_text("original")
    code = (
        "import os\n"
        "open('ok.txt', 'w').write('x')\n"
        "for path in ('/usr/evil', '/etc/evil', '/evil', "
        f"{str(outside)!r}):\n"
        "    try:\n"
        "        open(path, 'w').write('changed')\n"
        "        print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('denied', path, exc.strerror)\n"
    )
    result = run(forge_home, code, work, binds=(Bind(tmp_path / "outside.txt"),))
    assert "WROTE" not in result.output, result.output
    assert result.output.count("denied") == 4
    assert outside.read_text() == "original"
    assert (work / "ok.txt").read_text() == "x"


def test_forge_home_and_host_files_are_invisible(forge_home, work, tmp_path):
    (forge_home.home / "forge.db").write_text("secret")
    code = (
        "import os\n"
        f"for path in ({str(forge_home.home)!r}, {str(tmp_path)!r}, '/root', '/home', "
        f"{str(Path(__file__).parent)!r}):\n"
        "    print(path, os.path.exists(path) and sorted(os.listdir(path)))\n"
    )
    result = run(forge_home, code, work)
    lines = dict(line.split(" ", 1) for line in result.output.strip().splitlines())
    assert lines[str(forge_home.home)] == "False"
    assert lines[str(Path(__file__).parent)] == "False"
    # /root shows at most the path down to the interpreter Forge's environments use.
    prefix = interpreter_prefix()
    expect = f"['{prefix.parts[2]}']" if prefix.is_relative_to("/root") else "False"
    assert lines["/root"] == expect
    # Only the path down to the bound worktree exists under tmp_path.
    assert lines[str(tmp_path)] == "['work']"


def test_a_private_cwd_is_entered(forge_home, work):
    # A 0700 worktree, handed over to the sandbox user: only it (and bwrap) may enter.
    work.chmod(0o700)
    result = run(forge_home, "import os; print(os.getcwd())", work)
    assert result.returncode == 0, result
    assert result.output.strip() == str(work)
    assert stat.S_IMODE(work.stat().st_mode) == 0o700


def test_forge_home_inside_a_system_directory_is_masked(tmp_path):
    backend = BwrapBackend(hide=[Path("/etc/forge-test-home")])
    cmd = backend.command_line(SandboxRequest(argv=("true",), cwd=tmp_path), seccomp_fd=3)
    assert cmd[cmd.index("/etc/forge-test-home") - 1] == "--tmpfs"


def test_no_capabilities_inside(forge_home, work):
    code = "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0])"
    result = run(forge_home, code, work)
    assert result.output.split()[-1] == "0000000000000000"


def test_wall_time_kills_the_whole_tree(forge_home, work):
    marker = work / "survived"
    child = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True)\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    result = run(forge_home, code, work, wall_s=2)
    assert time.monotonic() - started < 10
    assert result.limit == "wall_time"
    assert "ran past its wall-time limit" in result.describe()
    time.sleep(4)
    assert not marker.exists()  # the grandchild in its own session died with the sandbox


def test_output_is_kept_head_and_tail(forge_home, work):
    code = (
        "import sys\nprint('FIRST')\n"
        "for _ in range(3000): sys.stdout.write('x' * 1024)\nprint('\\nLAST')\n"
    )
    result = run(forge_home, code, work)
    assert result.truncated and result.limit is None
    assert result.output.startswith("FIRST") and result.output.rstrip().endswith("LAST")
    assert "bytes of output not shown" in result.output
    assert len(result.output) < 1.1 * (1 << 20)


def test_output_limit_stops_the_run(forge_home, work):
    code = "import sys\nwhile True: sys.stdout.write('y' * 65536)\n"
    result = run(forge_home, code, work, output_bytes=4 << 20)
    assert result.limit == "output"


def test_cpu_time_limit(forge_home, work):
    result = run(forge_home, "while True: pass", work, cpu_s=1, wall_s=30)
    assert result.limit == "cpu_time", result


def test_file_size_limit(forge_home, work):
    code = "f = open('big', 'wb')\nwhile True: f.write(b'z' * 65536)\n"
    result = run(forge_home, code, work, file_size_mb=2)
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of the process dying.
    assert result.limit == "file_size" or "File too large" in result.output, result
    assert (work / "big").stat().st_size <= 2 << 20


def test_memory_limit(forge_home, work):
    code = "chunks = []\nwhile True: chunks.append(bytearray(16 << 20))\n"
    result = run(forge_home, code, work, memory_mb=256)
    # Either the address-space rlimit raises MemoryError or the supervisor kills the tree.
    assert result.limit == "memory" or "MemoryError" in result.output, result


def test_process_limit_stops_a_fork_bomb(forge_home, work):
    code = (
        "import os, time\nwhile True:\n    try: os.fork()\n    except OSError: time.sleep(0.01)\n"
    )
    started = time.monotonic()
    result = run(forge_home, code, work, processes=32, wall_s=60)
    assert result.limit == "processes", result
    assert time.monotonic() - started < 30
    time.sleep(0.5)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if code in (p.info["cmdline"] or [])]
    assert not leftovers


def test_unavailable_bwrap_is_refused_not_bypassed(forge_home, work, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("appliance.sandbox._checked", set())
    with pytest.raises(SandboxError, match="not installed"):
        run(forge_home, "open('ran', 'w')", work)
    assert not (work / "ran").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="setpriv is needed only when Forge is root")
def test_missing_setpriv_is_refused_as_root(forge_home, work, tmp_path, monkeypatch):
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("bwrap", "prlimit"):  # everything else the sandbox needs, not setpriv
        (tools / name).symlink_to(shutil.which(name))
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.setattr("appliance.sandbox._checked", set())
    with pytest.raises(SandboxError, match="setpriv is not installed"):
        run(forge_home, "open('ran', 'w')", work)
    assert not (work / "ran").exists()


def test_bad_backend_in_config_is_a_config_error(tmp_path, monkeypatch):
    from appliance.errors import ConfigError

    (tmp_path / "forge.toml").write_text('[sandbox]\nbackend = "none"\n')
    monkeypatch.setenv("FORGE_HOME", str(tmp_path))
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="sandbox.backend"):
        load_config()


def test_the_sandbox_dies_with_the_process_that_started_it(forge_home, work):
    marker = f"forge-orphan-{time.monotonic_ns()}"
    runner = (
        "import sys\n"
        "from pathlib import Path\n"
        "from appliance.config import load_config\n"
        "from appliance.sandbox import Bind, Limits, SandboxRequest, run_sandboxed\n"
        f"request = SandboxRequest(argv=('/bin/sh', '-c', 'sleep 300 # {marker}'), "
        f"cwd=Path({str(work)!r}), binds=(Bind(Path({str(work)!r}), writable=True),), "
        "limits=Limits(wall_s=300))\n"
        "run_sandboxed(request, load_config())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", runner], env=os.environ.copy())

    def sandboxed() -> list:
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if marker in " ".join(p.info["cmdline"] or [])
        ]

    deadline = time.monotonic() + 30
    while not sandboxed() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandboxed(), "the sandboxed command never started"
    parent.kill()  # SIGKILL: Forge gets no chance to clean up
    parent.wait()
    deadline = time.monotonic() + 10
    while sandboxed() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sandboxed()
