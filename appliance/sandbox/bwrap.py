"""Run a command under bubblewrap with no network and a read-only view of the system."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import SandboxError, SandboxTimeout

OUTPUT_LIMIT = 1 << 20  # bytes of combined output kept; the rest is dropped
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class SandboxResult:
    returncode: int
    output: str  # stdout and stderr interleaved, at most OUTPUT_LIMIT bytes
    duration_s: float
    truncated: bool


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def check_sandbox() -> None:
    """Raise SandboxError unless bubblewrap can start a network-less sandbox here."""
    exe = bwrap_path()
    if exe is None:
        raise SandboxError(
            "bubblewrap (bwrap) is not installed; Forge will not run repository code unconfined",
            "install the 'bubblewrap' package (./install.sh does it where apt is available)",
        )
    proc = subprocess.run(
        [
            exe,
            "--ro-bind",
            "/",
            "/",
            "--unshare-net",
            "--unshare-pid",
            "--die-with-parent",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0:
        raise SandboxError(
            f"bubblewrap is installed but cannot create a sandbox: {proc.stderr.strip()}",
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) "
            "or run Forge as root",
        )


def _command_line(
    argv: Sequence[str], cwd: Path, writable: Sequence[Path], readable: Sequence[Path]
) -> list[str]:
    exe = bwrap_path()
    if exe is None:
        check_sandbox()  # raises with the explanation
    cmd = [
        exe, "--ro-bind", "/", "/",
        "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session",
    ]  # fmt: skip
    for path in readable:
        cmd += ["--ro-bind", str(path), str(path)]
    for path in writable:
        cmd += ["--bind", str(path), str(path)]
    cmd += ["--chdir", str(cwd), "--"]
    return cmd + list(argv)


def run_sandboxed(
    argv: Sequence[str],
    *,
    cwd: Path,
    writable: Sequence[Path] = (),
    readable: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    timeout_s: float,
) -> SandboxResult:
    """Run `argv` in the sandbox; only `writable` paths (and a private /tmp) can change.

    Raises SandboxTimeout (after killing the whole tree) when `timeout_s` passes.
    """
    cwd = Path(cwd).resolve()
    run_env = {"PATH": SAFE_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    run_env.update(env or {})
    writable = [Path(p).resolve() for p in writable]
    readable = [Path(p).resolve() for p in readable]
    if not any(cwd.is_relative_to(p) for p in writable + readable):
        readable.append(cwd)  # the working directory is always visible, read-only by default
    cmd = _command_line(argv, cwd, writable, readable)
    started = time.monotonic()
    # Output goes to a file, not a pipe: a flood of output costs disk, never memory.
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=run_env,
            start_new_session=True,  # its own process group, so the whole tree can be killed
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise SandboxTimeout(
                f"{argv[0]} ran past its {timeout_s:g} s limit and was killed",
                "raise the time limit if the work is legitimately slow",
            ) from exc
        size = os.fstat(out.fileno()).st_size
        out.seek(0)
        data = out.read(OUTPUT_LIMIT)
    truncated = size > OUTPUT_LIMIT
    text = data.decode("utf-8", errors="replace")
    return SandboxResult(proc.returncode, text, time.monotonic() - started, truncated)
