"""The bubblewrap backend: a minimal root built from read-only system directories.

Inside: /usr, /etc and the other system directories read-only, the Python Forge builds
environments from, the request's binds, a private /tmp of limited size, /dev and /proc.
Nothing else of the host exists there, so FORGE_HOME (the database, other packages,
adapters) and home directories cannot be read. No network, its own PID, IPC and UTS
namespaces, no capabilities, killed with its parent; rlimits set by `prlimit`.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance.errors import SandboxError
from appliance.sandbox.spec import SandboxRequest, SandboxResult
from appliance.sandbox.supervise import supervise

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def interpreter_prefix() -> Path:
    """The installation of the Python that Forge's environments are made from."""
    return Path(os.path.realpath(sys.base_prefix))


def _system_args() -> list[str]:
    args = []
    for name in SYSTEM_DIRS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    prefix = interpreter_prefix()
    if not any(prefix.is_relative_to(Path("/") / name) for name in SYSTEM_DIRS):
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


def _visible(path: Path) -> bool:
    system = any(path.is_relative_to(Path("/") / name) for name in SYSTEM_DIRS)
    return system or path.is_relative_to(interpreter_prefix())


class BwrapBackend:
    """Run requests under bubblewrap. `hide`: host paths that must never be visible
    (FORGE_HOME), masked with an empty tmpfs should they lie inside a system directory."""

    name = "bwrap"

    def __init__(self, hide: Sequence[Path] = ()) -> None:
        self.hide = [Path(p).resolve() for p in hide]

    def check(self) -> None:
        exe = bwrap_path()
        if exe is None:
            raise SandboxError(
                "bubblewrap (bwrap) is not installed; Forge will not run repository code "
                "unconfined",
                "install the 'bubblewrap' package (./install.sh does it where apt is available)",
            )
        if shutil.which("prlimit") is None:
            raise SandboxError(
                "prlimit is not installed; Forge cannot set resource limits for the sandbox",
                "install the 'util-linux' package",
            )
        cmd = self.command_line(SandboxRequest(argv=("true",), cwd=Path("/")))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise SandboxError(
                f"bubblewrap is installed but cannot create a sandbox: {proc.stderr.strip()}",
                "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) "
                "or run Forge as root",
            )

    def command_line(self, request: SandboxRequest) -> list[str]:
        exe = bwrap_path()
        if exe is None:
            self.check()  # raises with the explanation
        limits = request.limits
        cpu = math.ceil(limits.cpu_s)
        memory = limits.memory_mb << 20
        fsize = limits.file_size_mb << 20
        cmd = [
            "prlimit",
            f"--cpu={cpu}:{cpu + 5}",  # SIGXCPU at the soft limit, SIGKILL 5 s later
            f"--as={memory}",
            f"--fsize={fsize}",
            f"--nofile={limits.open_files}",
            f"--nproc={limits.processes}",  # binds a non-root user; the supervisor counts too
            "--core=0",
            "--",
            exe,
            *_system_args(),
            "--dev", "/dev",
            "--proc", "/proc",
            "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd += ["--cap-drop", "ALL"]  # root outside must not be root with powers inside
        for hidden in self.hide:
            if _visible(hidden):
                cmd += ["--tmpfs", str(hidden)]
        # Parents before children, so a bind inside another bind is not covered by it.
        for bind in sorted(request.binds, key=lambda b: len(Path(b.path).resolve().parts)):
            path = str(Path(bind.path).resolve())
            cmd += ["--bind" if bind.writable else "--ro-bind", path, path]
        cmd += ["--remount-ro", "/"]  # the root tmpfs itself: nothing written outside binds
        cmd += ["--chdir", str(Path(request.cwd).resolve()), "--", *request.argv]
        return cmd

    def run(self, request: SandboxRequest) -> SandboxResult:
        env = {"PATH": SAFE_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
        env.update(request.env)
        return supervise(self.command_line(request), env, request.limits, backend=self.name)
