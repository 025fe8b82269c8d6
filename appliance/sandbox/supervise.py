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
# is stopped is what it writes in one interval (each file also capped by RLIMIT_FSIZE),
# plus what it holds in files it deleted while keeping them open, which no walk sees.
DISK_CHECK_S = 0.5
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


def _inside(procs: list[psutil.Process]) -> int | None:
    """A pid of the tree that lives in the sandbox's mount namespace, when one does yet."""
    mine = os.stat("/proc/self/ns/mnt").st_ino
    for proc in procs:
        try:
            if os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino != mine:
                return proc.pid
        except OSError:  # gone, or not ours to look at
            continue
    return None


def _tmpfs_bytes(pid: int | None, mounts: Sequence[str]) -> int:
    """Bytes held in the sandbox's tmpfs mounts, seen through a process's root."""
    if pid is None:
        return 0
    total = 0
    for mount in mounts:
        try:
            st = os.statvfs(f"/proc/{pid}/root{mount}")
        except OSError:
            continue
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
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


def supervise(
    cmd: Sequence[str],
    env: Mapping[str, str],
    limits: Limits,
    *,
    backend: str,
    pass_fds: Sequence[int] = (),
    disk_paths: Sequence[Path] = (),
    tmpfs: Sequence[str] = (),
) -> SandboxResult:
    """Start `cmd` in its own session and watch it until it ends or crosses a limit.

    `disk_paths`: the writable binds, whose growth counts against limits.disk_mb.
    `tmpfs`: mount points inside the sandbox whose bytes count as memory.
    `pass_fds`: descriptors the command inherits (bwrap's seccomp program).
    """
    read_fd, write_fd = os.pipe()
    disk_base = disk_bytes(disk_paths) if disk_paths else 0
    disk_limit = disk_base + (limits.disk_mb << 20)
    next_disk = 0.0
    inside = None
    started = time.monotonic()
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
    output = OutputCollector(read_fd)
    limit = None
    next_check = started
    memory_bytes = limits.memory_mb << 20
    try:
        while True:
            try:
                proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - started > limits.wall_s:
                limit = "wall_time"
            elif output.total > limits.output_bytes:
                limit = "output"
            elif now >= next_check:
                next_check = now + TREE_CHECK_S
                procs = _tree(proc.pid)
                count, rss = _usage(procs)
                if tmpfs:
                    # Pages of a tmpfs file a process maps count twice (RSS and tmpfs):
                    # erring towards stopping, never towards letting memory through.
                    inside = inside or _inside(procs)
                    rss += _tmpfs_bytes(inside, tmpfs)
                if count > limits.processes + 2:  # bwrap's own two processes
                    limit = "processes"
                elif rss > memory_bytes:
                    limit = "memory"
            if limit is None and disk_paths and now >= next_disk:
                walk_started = time.monotonic()
                if disk_bytes(disk_paths) > disk_limit:
                    limit = "disk"
                took = time.monotonic() - walk_started
                next_disk = time.monotonic() + max(DISK_CHECK_S, took * DISK_WALK_SHARE)
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
    if limit is None and output.total > limits.output_bytes:
        limit = "output"
    if limit is None and disk_paths and disk_bytes(disk_paths) > disk_limit:
        limit = "disk"  # it ended between two walks, over the cap
    limit = limit or _signal_limit(returncode)
    text, truncated = output.text()
    return SandboxResult(
        returncode=returncode,
        output=text,
        duration_s=time.monotonic() - started,
        truncated=truncated,
        limit=limit,
        backend=backend,
    )
