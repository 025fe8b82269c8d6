"""Free space on FORGE_HOME's file system: the guard that keeps work from starting on a
disk it would fill, and how much a folder takes.

Heavy work (a cycle, a campaign, training, evaluation) and ingest ask `room` first: free
space must cover what the work may write (doctor.job_need_gb per kind; a package's own
size for ingest) plus the floor doctor.min_free_gb. Below it the work waits, with the
reason in the job's row; it is never started to die half-way. A disk that fills anyway
(a guess too small, another program) shows up as `is_disk_full(exc)`, which ingest and
the daemon treat as "wait", never as a bad package or a failed attempt.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.errors import ForgeError

GB = 1 << 30
HEAVY_KINDS = ("cycle", "campaign", "train", "evaluate", "promote")


class DiskShortage(ForgeError):
    """Too little free disk to start the work; nothing was started."""


@dataclass(frozen=True)
class Room:
    """Free space against what a piece of work needs."""

    what: str  # "train", "ingest of demo", …
    path: str
    free_bytes: int
    need_bytes: int  # what the work may write
    floor_bytes: int  # doctor.min_free_gb: left free whatever runs

    @property
    def ok(self) -> bool:
        return self.free_bytes >= self.need_bytes + self.floor_bytes

    def reason(self) -> str:
        return (
            f"waiting for disk: {self.what} needs {_gb(self.need_bytes)} GB plus the "
            f"{_gb(self.floor_bytes)} GB floor (doctor.min_free_gb) free in {self.path}; "
            f"{_gb(self.free_bytes)} GB are free"
        )


def _gb(n: int) -> str:
    return f"{n / GB:.2f}".rstrip("0").rstrip(".")


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def job_need_bytes(config: Config, kind: str) -> int:
    """What a job of `kind` may write (0 for the light kinds)."""
    needs = config.settings.doctor.job_need_gb
    return int(getattr(needs, kind) * GB) if kind in HEAVY_KINDS else 0


def room(config: Config, what: str, need_bytes: int) -> Room:
    """Free space in FORGE_HOME against `need_bytes` plus the floor."""
    floor = int(config.settings.doctor.min_free_gb * GB)
    return Room(what, str(config.home), free_bytes(config.home), need_bytes, floor)


def require_room(config: Config, what: str, need_bytes: int) -> Room:
    """`room`, or DiskShortage saying what is short."""
    found = room(config, what, need_bytes)
    if not found.ok:
        raise DiskShortage(
            found.reason(),
            "free space (forge gc --dry-run shows what it can delete) or lower "
            "doctor.job_need_gb in forge.toml if the estimate is too large",
        )
    return found


def tree_bytes(path: Path, *, freed: bool = False) -> int:
    """The bytes of the regular files under `path` (links not followed, each inode once).
    With `freed`: only files with no other hard link, i.e. what deleting the folder frees
    (an environment's files are hard links into uv's cache)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    if not path.exists() and not path.is_symlink():
        return 0
    if not path.is_dir() or path.is_symlink():
        st = path.lstat()
        return 0 if freed and st.st_nlink > 1 else st.st_size
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:  # removed meanwhile
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen or (freed and st.st_nlink > 1):
                continue
            seen.add(key)
            total += st.st_size
    return total


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is the file system or SQLite saying it is full."""
    for _ in range(16):  # a chain of causes, never a cycle
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            return True
        if type(exc).__name__ == "OperationalError" and "disk is full" in str(exc):
            return True  # pysqlite3's own class
        exc = exc.__cause__ or exc.__context__
    return False
