"""Open Forge's database: the one way every process gets a connection.

WAL (readers never block the writer), a busy timeout (the daemon and the CLI share the
file), foreign keys on, sqlite-vec loaded, migrations applied. The standard library's
sqlite3 is used where it can load extensions; pysqlite3 otherwise (Debian's
Python cannot: it lacks `enable_load_extension`).
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from types import ModuleType

import sqlite_utils
import sqlite_vec

from appliance.config import Config, load_config
from appliance.errors import StoreError
from appliance.store.migrations import migrate as apply_migrations

BUSY_TIMEOUT_MS = 30_000


@functools.cache
def sqlite_module() -> ModuleType:
    """The DB-API module to use: one that can load sqlite-vec."""
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        # the fallback, only where the system sqlite3 cannot load extensions
        from pysqlite3 import dbapi2
    except ImportError as exc:  # pragma: no cover - depends on the machine's Python
        raise StoreError(
            "this Python's sqlite3 cannot load extensions and pysqlite3 is not installed",
            "re-run ./install.sh (it installs pysqlite3-binary)",
        ) from exc
    return dbapi2


def connect(path: Path | str, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, ready for use."""
    module = sqlite_module()
    try:
        conn = module.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
    except module.DatabaseError as exc:
        raise StoreError(
            f"cannot open the database {path}: {exc}",
            "move the file aside and run `forge init` for an empty database, or copy back "
            "the newest backup from FORGE_HOME/backups/",
        ) from exc
    if str(path) != ":memory:" and mode.lower() != "wal":
        raise StoreError(f"{path}: SQLite refused WAL mode (got {mode})")
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
    except (AttributeError, module.OperationalError) as exc:
        raise StoreError(
            f"cannot load sqlite-vec into SQLite: {exc}", "re-run ./install.sh"
        ) from exc
    db = sqlite_utils.Database(conn)
    if migrate:
        apply_migrations(db)
    return db


def open_db(config: Config | None = None, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open FORGE_HOME's database (creating FORGE_HOME and its folders if needed)."""
    if config is None:
        config = load_config()
    config.ensure_dirs()
    return connect(config.db_path, migrate=migrate)


class transaction:
    """`with transaction(db):` — BEGIN IMMEDIATE … COMMIT, ROLLBACK on error.

    Inside, write with `db.execute` (sqlite-utils' insert helpers commit on their own).
    """

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.conn = db.conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
