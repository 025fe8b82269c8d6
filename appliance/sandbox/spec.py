"""What a sandboxed run is asked to do (SandboxRequest) and what came of it (SandboxResult).

Both backends (bubblewrap, docker) take the same request and give the same result, so
the harness never knows which one ran its tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from appliance.config import SandboxSettings

# Why a run was stopped, when it was stopped by a limit rather than ending by itself.
LIMITS = ("wall_time", "cpu_time", "memory", "processes", "output", "file_size", "disk")


# The defaults are forge.toml's [sandbox] defaults, written once there.
_SETTINGS = SandboxSettings()
_WALL_S = 600.0


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run. Memory and processes count the whole process tree."""

    wall_s: float = _WALL_S
    cpu_s: float = _SETTINGS.cpu_s or _WALL_S  # per process (RLIMIT_CPU); 0: the wall time
    # resident memory of the whole tree; also each process's address space
    memory_mb: int = _SETTINGS.memory_mb
    processes: int = _SETTINGS.processes  # live processes in the tree
    file_size_mb: int = _SETTINGS.file_size_mb  # largest file a process may write (RLIMIT_FSIZE)
    open_files: int = _SETTINGS.open_files  # per process (RLIMIT_NOFILE)
    output_bytes: int = _SETTINGS.output_mb << 20  # combined stdout+stderr; more kills the run
    tmp_mb: int = _SETTINGS.tmp_mb  # size of the private /tmp
    # bytes allocated under the writable binds, all files together
    disk_mb: int = _SETTINGS.disk_mb
    # size of the private /dev/shm (counted with memory, as /tmp is)
    shm_mb: int = _SETTINGS.shm_mb

    @classmethod
    def from_settings(cls, settings: SandboxSettings, wall_s: float) -> Limits:
        """The limits of a run of `wall_s` seconds under forge.toml's [sandbox]."""
        return cls(
            wall_s=wall_s,
            cpu_s=settings.cpu_s or wall_s,
            memory_mb=settings.memory_mb,
            processes=settings.processes,
            file_size_mb=settings.file_size_mb,
            open_files=settings.open_files,
            output_bytes=settings.output_mb << 20,
            tmp_mb=settings.tmp_mb,
            disk_mb=settings.disk_mb,
            shm_mb=settings.shm_mb,
        )


@dataclass(frozen=True)
class Bind:
    """A host path made visible inside the sandbox: at the same path, or at `target`
    (a fixed place, so what a run builds against the path stays valid for the next run)."""

    path: Path
    writable: bool = False
    target: Path | None = None

    @property
    def inside(self) -> Path:
        """Where the sandbox sees it."""
        return Path(self.target) if self.target is not None else Path(self.path).resolve()


@dataclass(frozen=True)
class SandboxRequest:
    argv: tuple[str, ...]
    cwd: Path
    binds: tuple[Bind, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = Limits()


@dataclass(frozen=True)
class SandboxResult:
    returncode: int  # the command's exit status; 128+N when a signal N ended it
    output: str  # stdout and stderr interleaved; head and tail kept when it is long
    duration_s: float
    truncated: bool  # output was longer than what is kept
    limit: str | None = None  # one of LIMITS when a limit stopped the run, else None
    backend: str = "bwrap"

    @property
    def stopped(self) -> bool:
        return self.limit is not None

    def describe(self) -> str:
        """One line an operator can read: how the run ended."""
        if self.limit is not None:
            return f"stopped: {LIMIT_WORDS[self.limit]}"
        return f"exited {self.returncode}"


LIMIT_WORDS = {
    "wall_time": "ran past its wall-time limit",
    "cpu_time": "used up its CPU-time limit",
    "memory": "used more memory than its limit",
    "processes": "started more processes than its limit",
    "output": "printed more output than its limit",
    "file_size": "wrote a file larger than its limit",
    "disk": "wrote more to disk than its limit",
}


class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Raise SandboxError (what is missing, how to fix it) unless runs can start."""

    def run(self, request: SandboxRequest) -> SandboxResult:
        """Run the request to the end or until a limit stops it; never unconfined."""
