"""Watch a sandboxed process tree to its end: output, wall time, memory, processes, disk.

The kernel enforces what rlimits can (CPU seconds, file size, open files, address space
per process); this module enforces what they cannot see: the whole tree's resident
memory together with the bytes held in the sandbox's tmpfs mounts (/tmp, /dev/shm:
memory no process maps), its number of processes, wall time, output bytes, and the
bytes written into the writable binds. Crossing any limit kills the whole tree at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from appliance.sandbox.spec import Limits, SandboxResult
from appliance.sandbox.usage import disk_bytes

KEEP_BYTES = 1 << 20  # output kept for the result: the first and last half of this
POLL_S = 0.02
TREE_CHECK_S = 0.1
# Disk usage is walked at most every DISK_CHECK_S, and never more than a tenth of the
# time (a big worktree takes long to walk). What a run can write past disk_mb before it
# is stopped is what it writes in one interval (page-cache speed: about 1 GB/s here, so
# some 200 MB for a small worktree); the walk after the end still names the limit.
# Files deleted while held open count too (through /proc/PID/fd).
# A hard bound needs a file system of its own per run (quota or a sized image).
DISK_CHECK_S = 0.2
DISK_WALK_SHARE = 10


class OutputCollector:
    """Read a pipe to EOF, keeping the head and the tail and counting every byte."""

    def __init__(self, fd: int, keep: int = KEEP_BYTES) -> None:
        self.fd = fd
        self.half = keep // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with os.fdopen(self.fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                self.total += len(chunk)
                room = self.half - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail += chunk
                    if len(self.tail) > self.half:
                        del self.tail[: len(self.tail) - self.half]

    def text(self) -> tuple[str, bool]:
        dropped = self.total - len(self.head) - len(self.tail)
        data = bytes(self.head)
        if dropped > 0:
            data += f"\n[... {dropped} bytes of output not shown ...]\n".encode()
        data += bytes(self.tail)
        return data.decode("utf-8", errors="replace"), dropped > 0


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _pss(pid: int) -> int | None:
    """Proportional set size: resident bytes, each shared page split among its sharers.

    RSS would count a page shared by N forked children N times, so a test suite that
    forks workers (or a fork bomb) would read as N times its memory.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError):
        return None
    return None


def _usage(procs: list[psutil.Process]) -> tuple[int, int]:
    """(live processes, resident bytes) of a tree; processes may vanish while we look."""
    count = rss = 0
    for proc in procs:
        try:
            pss = _pss(proc.pid)
            rss += pss if pss is not None else proc.memory_info().rss
            count += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return count, rss


def _inside(procs: list[psutil.Process]) -> list[int]:
    """The pids of the tree that live in a mount namespace other than ours."""
    mine = os.stat("/proc/self/ns/mnt").st_ino
    found = []
    for proc in procs:
        try:
            if os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino != mine:
                found.append(proc.pid)
        except OSError:  # gone, or not ours to look at
            continue
    return found


def _tmpfs_bytes(pid: int, mounts: Mapping[str, int]) -> int | None:
    """Bytes held in the sandbox's tmpfs mounts, seen through the root of process `pid`;
    None until that root is the finished sandbox.

    While bwrap sets up, a process's /tmp may still be the host's, so a mount counts
    only when its size is the one asked for.
    """
    total = 0
    for mount, size in mounts.items():
        try:
            st = os.statvfs(f"/proc/{pid}/root{mount}")
        except OSError:
            return None
        if st.f_blocks * st.f_frsize != size:
            return None
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def unlinked_bytes(procs: list[psutil.Process], devices: set[int]) -> int:
    """Bytes of files the tree holds open after deleting them, on the given devices.

    No walk sees such a file, yet its blocks stay allocated while it is open.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for proc in procs:
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{proc.pid}/fd/{fd}")  # the open file itself
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink == 0 and st.st_dev in devices and key not in seen:
                seen.add(key)
                total += st.st_blocks * 512
    return total


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the supervised process group and every process left in its tree."""
    procs = _tree(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in procs:  # processes that moved to another session or group
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def _signal_limit(returncode: int) -> str | None:
    # RLIMIT_CPU sends SIGXCPU, RLIMIT_FSIZE sends SIGXFSZ; bwrap reports 128 + signal.
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "cpu_time"
    if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ):
        return "file_size"
    return None


class _Watch:
    """The limits a running tree is checked against on each poll, and what the checks
    keep between polls: when the tree and the disk are next measured, which process's
    mount namespace shows the tmpfs mounts, the tree as last listed."""

    def __init__(
        self, limits: Limits, disk_paths: Sequence[Path], tmpfs: Mapping[str, int] | None
    ) -> None:
        """Made before the command starts: the disk it may grow is measured from here."""
        self.limits, self.disk_paths, self.tmpfs = limits, disk_paths, tmpfs
        disk_base = disk_bytes(disk_paths) if disk_paths else 0
        self.disk_limit = disk_base + (limits.disk_mb << 20)
        self.devices = {os.stat(p).st_dev for p in disk_paths if os.path.exists(p)}
        self.memory_bytes = limits.memory_mb << 20
        self.next_disk = 0.0
        self.started = self.next_check = time.monotonic()
        self.inside: int | None = None
        self.procs: list[psutil.Process] = []  # the tree as last listed

    def crossed(self, pid: int, output_bytes: int) -> str | None:
        """The limit the tree of `pid`, with `output_bytes` written so far, is over now."""
        now = time.monotonic()
        if now - self.started > self.limits.wall_s:
            return "wall_time"
        if output_bytes > self.limits.output_bytes:
            return "output"
        limit = None
        if now >= self.next_check:
            self.next_check = now + TREE_CHECK_S
            limit = self._tree_limit(pid)
        if limit is None and self.disk_paths and now >= self.next_disk:
            walk_started = time.monotonic()
            used = disk_bytes(self.disk_paths) + unlinked_bytes(self.procs, self.devices)
            if used > self.disk_limit:
                limit = "disk"
            took = time.monotonic() - walk_started
            self.next_disk = time.monotonic() + max(DISK_CHECK_S, took * DISK_WALK_SHARE)
        return limit

    def _tree_limit(self, pid: int) -> str | None:
        self.procs = _tree(pid)
        count, rss = _usage(self.procs)
        if self.tmpfs:
            # Pages of a tmpfs file a process maps count twice (PSS and tmpfs):
            # erring towards stopping, never towards letting memory through.
            inside, tmpfs = self.inside, self.tmpfs
            if inside is None or (held := _tmpfs_bytes(inside, tmpfs)) is None:
                self.inside, held = None, 0
                for candidate in _inside(self.procs):
                    if (held := _tmpfs_bytes(candidate, tmpfs)) is not None:
                        self.inside = candidate
                        break
            rss += held or 0
        if count > self.limits.processes + 2:  # bwrap's own two processes
            return "processes"
        if rss > self.memory_bytes:
            return "memory"
        return None

    def after_end(self, output_bytes: int) -> str | None:
        """The limit a tree that ended by itself was over at the end, if any."""
        if output_bytes > self.limits.output_bytes:
            return "output"
        if self.disk_paths and disk_bytes(self.disk_paths) > self.disk_limit:
            return "disk"  # it ended between two walks, over the cap
        return None


def _start(
    cmd: Sequence[str], env: Mapping[str, str], pass_fds: Sequence[int]
) -> tuple[subprocess.Popen, OutputCollector]:
    """Start `cmd` in a session of its own, its output (both streams) into one pipe."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env=dict(env),
            pass_fds=tuple(pass_fds),
            start_new_session=True,  # its own process group, killed as one
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return proc, OutputCollector(read_fd)


def supervise(
    cmd: Sequence[str],
    env: Mapping[str, str],
    limits: Limits,
    *,
    backend: str,
    pass_fds: Sequence[int] = (),
    disk_paths: Sequence[Path] = (),
    tmpfs: Mapping[str, int] | None = None,
) -> SandboxResult:
    """Start `cmd` in its own session and watch it until it ends or crosses a limit.

    `disk_paths`: the writable binds, whose growth counts against limits.disk_mb.
    `tmpfs`: mount points inside the sandbox whose bytes count as memory, with their
    sizes in bytes.
    `pass_fds`: descriptors the command inherits (bwrap's seccomp program).
    """
    watch = _Watch(limits, disk_paths, tmpfs)
    proc, output = _start(cmd, env, pass_fds)
    limit = None
    try:
        while True:
            try:
                proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            limit = watch.crossed(proc.pid, output.total)
            if limit is not None:
                kill_tree(proc)
                proc.wait()
                break
    except BaseException:  # interrupted (KeyboardInterrupt, a job cancelled): leave nothing
        kill_tree(proc)
        proc.wait()
        raise
    output.thread.join(timeout=10)
    returncode = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    limit = limit or watch.after_end(output.total) or _signal_limit(returncode)
    text, truncated = output.text()
    return SandboxResult(
        returncode=returncode,
        output=text,
        duration_s=time.monotonic() - watch.started,
        truncated=truncated,
        limit=limit,
        backend=backend,
    )
