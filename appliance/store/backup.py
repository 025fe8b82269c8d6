"""Online backups of the database and restoring one.

A backup is made with SQLite's backup API while Forge runs (readers and the writer go
on), written beside its final name and renamed only once it is complete and passes
`PRAGMA integrity_check`, so `backups/` never holds half a backup. Names carry the
microsecond and a random part and are taken with a hard link (which fails rather than
replace), so backups made at the same moment never collide; a backup is one
self-contained file (journal mode DELETE), and the partial's -journal/-wal/-shm never
outlive the run. Retention keeps the newest backup of each of the last 7 days and of each
of the last 4 ISO weeks, and every backup of the last hour; other files in `backups/` are
never touched. A restore refuses while the daemon runs, checks
the file first, keeps the database it replaces as a backup of its own, and swaps the
file in with a rename: it is all or nothing.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import psutil

from appliance.config import Config
from appliance.errors import ForgeError, UsageError
from appliance.store.db import connect, sqlite_module

# forge-20261202T043200.123456Z-1a2b3c4d.db now; forge-20261202T043200Z.db before: both read.
NAME = re.compile(r"^forge-(\d{8}T\d{6})(?:\.(\d{6}))?Z(?:-[0-9a-f]{8})?(?:-pre-restore)?\.db$")
STAMP = "%Y%m%dT%H%M%S"
KEEP_DAILY, KEEP_WEEKLY = 7, 4
# A backup this young is never pruned: one just reported (or just made by a concurrent
# run) still exists when the operator looks for it.
KEEP_RECENT = timedelta(hours=1)
SIDE_FILES = ("-journal", "-wal", "-shm")  # what SQLite may leave beside a database file
PID_FILE = "forged.pid"  # written by the daemon while it runs


class RestoreRefused(ForgeError):
    """The restore was not done: nothing was changed."""


@dataclass(frozen=True)
class Backup:
    path: Path
    at: datetime
    size: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "at": self.at.isoformat(), "size": self.size}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check(path: Path) -> str | None:
    """Why `path` is not a usable Forge database, or None."""
    if path.stat().st_size < 100 or path.open("rb").read(16) != b"SQLite format 3\x00":
        return "it is not an SQLite database"
    module = sqlite_module()
    try:
        # immutable: reading a file never makes -wal/-shm beside it (in backups/ or anywhere)
        conn = module.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                return f"its integrity check failed: {result}"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except module.DatabaseError as exc:
        return f"SQLite cannot read it: {exc}"
    if "_migrations" not in tables or "packages" not in tables:
        return "it is an SQLite file but not a Forge database (no _migrations or packages table)"
    return None


def backups(config: Config) -> list[Backup]:
    found = []
    for path in config.dir("backups").glob("forge-*.db"):
        match = NAME.match(path.name)
        if match:
            at = datetime.strptime(match[1], STAMP).replace(
                microsecond=int(match[2] or 0), tzinfo=UTC
            )
            found.append(Backup(path, at, path.stat().st_size))
    return sorted(found, key=lambda b: (b.at, b.path.name))


def _remove_with_side_files(path: Path) -> None:
    for extra in ("", *SIDE_FILES):
        Path(f"{path}{extra}").unlink(missing_ok=True)


def _claim_name(partial: Path, folder: Path, now: datetime, suffix: str) -> Path:
    """Give the finished `partial` a name no other backup has: a hard link fails where
    a rename would replace, so two runs can never end up with one file."""
    while True:
        stamp = now.strftime(STAMP) + f".{now.microsecond:06d}Z"
        final = folder / f"forge-{stamp}-{secrets.token_hex(4)}{suffix}.db"
        try:
            os.link(partial, final)
            return final
        except FileExistsError:
            continue  # 32 random bits taken in the same microsecond: draw again
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
        # A file system without hard links: an exclusive create reserves the name.
        try:
            os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        partial.replace(final)
        return final


def make_backup(config: Config, *, now: datetime | None = None, suffix: str = "") -> Backup:
    """Copy the live database into backups/ (online), verified; then apply retention."""
    now = now or datetime.now(UTC)
    folder = config.dir("backups")
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".forge-{os.getpid()}-{secrets.token_hex(8)}.db.partial"
    module = sqlite_module()
    try:
        source = connect(config.db_path, migrate=False)
        try:
            target = module.connect(str(partial))
            try:
                source.conn.backup(target)  # a consistent snapshot while others go on
                # The copy says WAL like its source; a backup is one file that reads alone.
                target.execute("PRAGMA journal_mode = DELETE").fetchone()
            finally:
                target.close()
        finally:
            source.conn.close()
        problem = _check(partial)
        if problem:
            raise ForgeError(f"the backup came out unusable ({problem})", "run forge doctor")
        _fsync(partial)
        final = _claim_name(partial, folder, now, suffix)
    finally:
        _remove_with_side_files(partial)  # success or not: only the finished backup stays
    _fsync(folder)
    if not suffix:
        prune(config, now=now)
    return Backup(final, now, final.stat().st_size)


def keep(found: list[Backup], now: datetime) -> set[Path]:
    """The newest backup of each of the last 7 days and of each of the last 4 weeks, and
    every backup of the last hour."""
    kept: dict[tuple, Backup] = {}
    recent = set()
    for b in found:
        age = now - b.at
        if age < KEEP_RECENT:
            recent.add(b.path)
        keys = []
        if age < timedelta(days=KEEP_DAILY):
            keys.append(("day", b.at.date()))
        if age < timedelta(weeks=KEEP_WEEKLY):
            keys.append(("week", tuple(b.at.isocalendar())[:2]))
        for key in keys:
            if key not in kept or kept[key].at <= b.at:
                kept[key] = b
    return {b.path for b in kept.values()} | recent


def prune(config: Config, *, now: datetime | None = None, dry_run: bool = False) -> list[Path]:
    """Delete the regular backups retention does not keep (pre-restore copies stay); with
    `dry_run`, only name them."""
    now = now or datetime.now(UTC)
    regular = [b for b in backups(config) if not b.path.name.endswith("-pre-restore.db")]
    wanted = keep(regular, now)
    removed = [b.path for b in regular if b.path not in wanted]
    for path in [] if dry_run else removed:
        path.unlink(missing_ok=True)
    return removed


def daemon_pid(config: Config) -> int | None:
    """The pid of a running forged for this FORGE_HOME, or None."""
    try:
        pid = int((config.home / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if psutil.pid_exists(pid) else None


def restore(config: Config, file: Path) -> tuple[Backup, Backup | None]:
    """Put `file` in place of the database; returns (what was restored, the copy of the
    database it replaced)."""
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"{file} is not a file", "name a backup: forge backup --list shows them")
    pid = daemon_pid(config)
    if pid is not None:
        raise RestoreRefused(
            f"forged is running (pid {pid}): a restore under it would lose its work",
            "stop it first (systemctl stop forged), then restore",
        )
    problem = _check(file)
    if problem:
        raise RestoreRefused(f"{file} cannot be restored: {problem}",
                             "pick another file from FORGE_HOME/backups/")  # fmt: skip
    previous = None
    if config.db_path.exists():
        previous = make_backup(config, suffix="-pre-restore")
    staged = config.db_path.with_name(".forge.db.restoring")
    staged.write_bytes(file.read_bytes())
    _fsync(staged)
    for extra in ("-wal", "-shm"):
        Path(f"{config.db_path}{extra}").unlink(missing_ok=True)
    staged.replace(config.db_path)
    _fsync(config.home)
    connect(config.db_path).conn.close()  # an older backup gets the newer migrations
    restored = Backup(file, datetime.fromtimestamp(file.stat().st_mtime, UTC), file.stat().st_size)
    return restored, previous
