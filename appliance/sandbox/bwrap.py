"""The bubblewrap backend: a minimal root built from read-only system directories.

Inside: /usr, /etc and the other system directories read-only, the Python Forge builds
environments from, the request's binds, a private /tmp and /dev/shm of limited size
(their bytes count as memory), a private /dev and /proc. Nothing else of the host exists
there, so FORGE_HOME (the database, other packages, adapters) and home directories cannot
be read. No network, its own PID, IPC and UTS namespaces, killed with its parent;
rlimits set by `prlimit`; a seccomp filter (seccomp.py) in the spirit of Docker's.

Sandboxed code is never host root and holds no capabilities:
- Forge as root: bwrap itself runs privileged (so it can bind paths under FORGE_HOME
  that the sandbox user could not traverse) but keeps only CAP_SETUID, CAP_SETGID and
  CAP_SETPCAP, and the command is started through `setpriv`, which takes the sandbox
  user's uid/gid (identity.py), drops every group and capability, the bounding set too,
  and sets no_new_privs. The writable binds belong to that user for the run.
- Forge as an ordinary user (`forge` under systemd): bwrap makes a user namespace with
  Forge's own uid mapped inside, no capabilities, and forbids nested user namespaces
  (--disable-userns).
In /proc, the parts that change the host (sys, sysrq-trigger, irq, bus, fs) are
read-only and the ones that leak it (kcore, keys, timer_list, ...) masked, as Docker does.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from appliance.errors import SandboxError
from appliance.sandbox import seccomp
from appliance.sandbox.identity import forge_is_root, handed_over, sandbox_ids
from appliance.sandbox.interpreter import interpreter_prefix
from appliance.sandbox.spec import SandboxRequest, SandboxResult
from appliance.sandbox.supervise import supervise

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
# What bwrap keeps, as root: for setpriv to change identity and empty the bounding set,
# and for bwrap's own chdir into a cwd that only the sandbox user may enter (a 0700
# worktree handed over to it). They reach setpriv as ambient capabilities, and setpriv
# drops them all before it executes the command.
SETPRIV_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_READ_SEARCH")
# Docker's readonly and masked paths of /proc. Bound from the host's /proc: the same
# kernel files; the namespaced sysctls under sys/ then show the host's values, read-only.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "latency_stats")
NPROC_SLACK = 8  # RLIMIT_NPROC above limits.processes; see command_line
# The sandbox's tmpfs mounts, whose bytes the supervisor counts as memory.
TMPFS = ("/tmp", "/dev/shm")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


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
        args += _parent_dirs([prefix])
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


def _proc_args() -> list[str]:
    # Only what exists on the host: bwrap cannot create a mount point inside /proc.
    args = []
    for name in PROC_READONLY:
        if os.path.lexists(f"/proc/{name}"):
            args += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    for name in PROC_MASKED:
        if os.path.lexists(f"/proc/{name}"):
            args += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    return args


def _parent_dirs(paths: Sequence[Path]) -> list[str]:
    """`--dir` for each directory leading to `paths` that bwrap would otherwise make.

    bwrap copies the host's mode onto the directories it creates on the way to a bind,
    so /root (0700) or a 0700 worktree container would stop the sandbox user on the way
    to its own cwd. These show nothing but the way down: the names of the binds.
    """
    binds = set(paths)
    skip = {Path("/"), *map(Path, TMPFS), Path("/dev"), Path("/proc")}
    args: list[str] = []
    seen: set[Path] = set()
    for path in sorted(paths, key=lambda p: len(p.parts)):
        for parent in reversed(path.parents):
            if parent in skip or parent in seen or _visible(parent):
                continue
            if any(parent == b or parent.is_relative_to(b) for b in binds):
                continue  # the host's own directory, bound
            seen.add(parent)
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _visible(path: Path) -> bool:
    system = any(path.is_relative_to(Path("/") / name) for name in SYSTEM_DIRS)
    return system or path.is_relative_to(interpreter_prefix())


class BwrapBackend:
    """Run requests under bubblewrap. `hide`: host paths that must never be visible
    (FORGE_HOME), masked with an empty tmpfs should they lie inside a system directory.
    `ids`: the host uid/gid sandboxed code runs as (identity.sandbox_ids)."""

    name = "bwrap"

    def __init__(self, hide: Sequence[Path] = (), ids: tuple[int, int] | None = None) -> None:
        self.hide = [Path(p).resolve() for p in hide]
        self.ids = ids if ids is not None else sandbox_ids()
        if forge_is_root() and 0 in self.ids:
            raise SandboxError(
                "the sandbox would run repository code as root",
                "set sandbox.user in forge.toml to an unprivileged user",
            )

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
        if forge_is_root() and shutil.which("setpriv") is None:
            raise SandboxError(
                "setpriv is not installed; as root Forge cannot drop sandboxed code to an "
                "unprivileged user",
                "install the 'util-linux' package (setpriv is part of it)",
            )
        seccomp.program()  # raises when libseccomp is missing
        fd = seccomp.filter_fd()
        try:
            cmd = self.command_line(SandboxRequest(argv=("true",), cwd=Path("/")), fd)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, pass_fds=(fd,))
        finally:
            os.close(fd)
        if proc.returncode != 0:
            if forge_is_root():
                hint = "check that bubblewrap 0.8 or later is installed (bwrap --version)"
            else:
                hint = (
                    "allow unprivileged user namespaces (sysctl user.max_user_namespaces "
                    "above 0; kernel.unprivileged_userns_clone=1 on older Debian kernels; "
                    "kernel.apparmor_restrict_unprivileged_userns=0 where AppArmor "
                    "restricts them) and use bubblewrap 0.8 or later"
                )
            raise SandboxError(
                f"bubblewrap is installed but cannot create a sandbox: {proc.stderr.strip()}",
                hint,
            )

    def command_line(self, request: SandboxRequest, seccomp_fd: int) -> list[str]:
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
            # The kernel's hard stop for a fork bomb (it binds the non-root sandbox user
            # and counts all its tasks, threads too); a little above the limit, so that
            # the supervisor sees the tree pass the limit and names it.
            f"--nproc={limits.processes + NPROC_SLACK}",
            "--core=0",
            "--",
            exe,
            *_system_args(),
            "--dev", "/dev",
            "--perms", "1777", "--size", str(limits.shm_mb << 20), "--tmpfs", "/dev/shm",
            "--proc", "/proc",
            *_proc_args(),
            "--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp",
            "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            "--seccomp", str(seccomp_fd),
        ]  # fmt: skip
        if forge_is_root():
            cmd += ["--cap-drop", "ALL"]
            for cap in SETPRIV_CAPS:
                cmd += ["--cap-add", cap]
        else:
            cmd += ["--unshare-user", "--disable-userns"]
        for hidden in self.hide:
            if _visible(hidden):
                cmd += ["--tmpfs", str(hidden)]
        cmd += _parent_dirs([b.inside for b in request.binds])
        # Parents before children, so a bind inside another bind is not covered by it.
        for bind in sorted(request.binds, key=lambda b: len(b.inside.parts)):
            path = str(Path(bind.path).resolve())
            cmd += ["--bind" if bind.writable else "--ro-bind", path, str(bind.inside)]
        cmd += ["--remount-ro", "/"]  # the root tmpfs itself: nothing written outside binds
        cmd += ["--chdir", str(Path(request.cwd).resolve()), "--"]
        if forge_is_root():
            uid, gid = self.ids
            cmd += [
                shutil.which("setpriv") or "setpriv",
                f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
            ]  # fmt: skip
        return cmd + list(request.argv)

    def run(self, request: SandboxRequest) -> SandboxResult:
        env = {"PATH": SAFE_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
        env.update(request.env)
        limits = request.limits
        writable = [Path(b.path).resolve() for b in request.binds if b.writable]
        fd = seccomp.filter_fd()
        try:
            with handed_over(writable, *self.ids):
                return supervise(
                    self.command_line(request, fd),
                    env,
                    request.limits,
                    backend=self.name,
                    pass_fds=(fd,),
                    disk_paths=writable,
                    tmpfs={"/tmp": limits.tmp_mb << 20, "/dev/shm": limits.shm_mb << 20},
                )
        finally:
            os.close(fd)
