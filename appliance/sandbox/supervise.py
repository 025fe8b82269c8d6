"""Watch a sandboxed process tree to its end: output, wall time, memory and process count.

The kernel enforces what rlimits can (CPU seconds, file size, open files, address space
per process); this module enforces what they cannot see: the whole tree's resident
memory and number of processes (RLIMIT_NPROC does not bind root), wall time, and
output bytes. Crossing any limit kills the whole tree at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

import psutil

from appliance.sandbox.spec import Limits, SandboxResult

KEEP_BYTES = 1 << 20  # output kept for the result: the first and last half of this
POLL_S = 0.02
TREE_CHECK_S = 0.1


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


def _usage(procs: list[psutil.Process]) -> tuple[int, int]:
    """(live processes, resident bytes) of a tree; processes may vanish while we look."""
    count = rss = 0
    for proc in procs:
        try:
            rss += proc.memory_info().rss
            count += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return count, rss


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
    cmd: Sequence[str], env: Mapping[str, str], limits: Limits, *, backend: str
) -> SandboxResult:
    """Start `cmd` in its own session and watch it until it ends or crosses a limit."""
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env=dict(env),
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
                count, rss = _usage(_tree(proc.pid))
                if count > limits.processes + 2:  # bwrap's own two processes
                    limit = "processes"
                elif rss > memory_bytes:
                    limit = "memory"
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
