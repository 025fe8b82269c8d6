"""The corpus in the database: the owner of the `packages`, `commits` and `ingest_events`
tables. Only this module's SQL names them; everything else reads and writes the corpus
through the functions here, and gets frozen records back.

A package row is a `RepoPackage`, a commit row a `CorpusCommit`, an ingest event an
`IngestEvent`. `find_package` is how a package named by an operator (NAME, NAME@VERSION
or NAME-VERSION) is found.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlite_utils

from appliance.clock import now_iso
from appliance.errors import UsageError
from appliance.records import from_row

# The database, or the connection of a transaction the caller holds.
Connection = sqlite_utils.Database | sqlite3.Connection

_PACKAGE_COLUMNS = (
    "id, name, version, manifest_sha256, path, split, description, license, python, "
    "test_command, test_timeout_s, requirements, requirement_sets, ingested_at"
)


@dataclass(frozen=True)
class RepoPackage:
    """One ingested version of a repo package (a `packages` row)."""

    id: int
    name: str
    version: str
    manifest_sha256: str
    path: str  # relative to FORGE_HOME: corpus/NAME@VERSION (or the older NAME-VERSION)
    split: str | None  # train | eval
    description: str
    license: str
    python: str
    test_command: tuple[str, ...]
    test_timeout_s: float
    # Each commit's requirements are one of these sets (schema 2); a row written with only
    # `requirements` (schema 1) has that one set, used by every commit.
    requirement_sets: tuple[tuple[str, ...], ...]
    ingested_at: str

    @property
    def label(self) -> str:
        """NAME-VERSION, as campaigns and commit specs name the package."""
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class CorpusCommit:
    """One task commit of a package (a `commits` row)."""

    id: int
    package_id: int
    sha: str
    parent: str
    message: str
    author_date: str
    lines_added: int
    lines_deleted: int
    requirement_set: int  # index into the package's requirement_sets


@dataclass(frozen=True)
class IngestEvent:
    """What one ingest did with one source (an `ingest_events` row)."""

    at: str
    source: str
    outcome: str  # accepted | rejected | duplicate | recovered
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class NewCommit:
    """A commit as ingest records it (from the manifest)."""

    sha: str
    parent: str
    message: str
    author_date: str
    files: str  # JSON: the manifest's file entries
    lines_added: int
    lines_deleted: int
    requirement_set: int


def _packages(db: Connection, where: str = "", params: Sequence = ()) -> list[RepoPackage]:
    """The packages the SQL after `FROM packages` selects, in its order."""
    cursor = db.execute(f"SELECT {_PACKAGE_COLUMNS} FROM packages {where}", params)
    columns = [c[0] for c in cursor.description]
    return [_package(dict(zip(columns, row, strict=True))) for row in cursor.fetchall()]


def _package(row: dict) -> RepoPackage:
    sets = json.loads(row["requirement_sets"] or "[]") or [json.loads(row["requirements"])]
    return from_row(
        RepoPackage,
        row,
        test_command=tuple(json.loads(row["test_command"])),
        requirement_sets=tuple(tuple(s) for s in sets),
    )


# --- packages ----------------------------------------------------------------------------


def packages(db: Connection) -> list[RepoPackage]:
    """Every ingested package version, by name and version."""
    return _packages(db, "ORDER BY name, version")


def package_by_id(db: Connection, package_id: int) -> RepoPackage | None:
    found = _packages(db, "WHERE id = ?", [package_id])
    return found[0] if found else None


def package_named(db: Connection, name: str, version: str) -> RepoPackage | None:
    """The package NAME at exactly VERSION, if ingested."""
    found = _packages(db, "WHERE name = ? AND version = ?", [name, version])
    return found[0] if found else None


def names(db: Connection, *, include_eval: bool = True) -> list[str]:
    """The package names in the corpus, sorted; without `include_eval`, only the names
    with a version that is not in the eval split (what campaigns run on)."""
    where = "" if include_eval else " WHERE split IS NOT 'eval'"
    sql = f"SELECT DISTINCT name FROM packages{where} ORDER BY name"
    return [name for (name,) in db.execute(sql).fetchall()]


def paths(db: Connection) -> set[str]:
    """The corpus folders (relative to FORGE_HOME) that have a row."""
    return {path for (path,) in db.execute("SELECT path FROM packages").fetchall()}


def find_package(db: Connection, name: str) -> RepoPackage:
    """The package for NAME (newest ingested version), NAME@VERSION (exact: neither
    part may contain '@'), or NAME-VERSION (the older spelling, which can be ambiguous:
    the newest match wins)."""
    found = _packages(
        db,
        "WHERE name = ? OR name || '@' || version = ? OR name || '-' || version = ? "
        "ORDER BY name || '@' || version = ? DESC, ingested_at DESC, id DESC LIMIT 1",
        [name, name, name, name],
    )
    if not found:
        known = names(db)
        raise UsageError(
            f"no package named {name!r} in the corpus",
            f"ingest it first (forge ingest DIR); known packages: {', '.join(known) or 'none'}",
        )
    return found[0]


def newest_split(db: Connection, name: str) -> str | None:
    """The split of the newest version of `name` that has one (None: no such version)."""
    found = db.execute(
        "SELECT split FROM packages WHERE name = ? AND split IS NOT NULL ORDER BY id DESC LIMIT 1",
        [name],
    ).fetchall()
    return next((split for (split,) in found), None)


def version_splits(db: Connection, name: str) -> tuple[tuple[str, str | None], ...]:
    """(version, split) of every version of `name`, in the order they were ingested."""
    return tuple(
        (version, split)
        for version, split in db.execute(
            "SELECT version, split FROM packages WHERE name = ? ORDER BY id", [name]
        ).fetchall()
    )


def set_name_split(db: Connection, name: str, split: str) -> None:
    """Put every version of `name` in `split` (the caller holds the transaction)."""
    db.execute("UPDATE packages SET split = ? WHERE name = ?", [split, name])


def add_package(
    db: Connection,
    *,
    name: str,
    version: str,
    manifest_sha256: str,
    path: str,
    split: str,
    description: str,
    license: str,
    python: str,
    test_command: list[str],
    test_timeout_s: float,
    requirements: list[str],
    requirement_sets: list[list[str]],
) -> int:
    """Insert a package row (the caller holds the transaction); its id."""
    cur = db.execute(
        """INSERT INTO packages (name, version, manifest_sha256, path, split, description,
           license, python, test_command, test_timeout_s, requirements, requirement_sets,
           ingested_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            name,
            version,
            manifest_sha256,
            path,
            split,
            description,
            license,
            python,
            json.dumps(test_command),
            test_timeout_s,
            json.dumps(requirements),
            json.dumps(requirement_sets),
            now_iso(),
        ],
    )
    return cur.lastrowid


# --- commits -----------------------------------------------------------------------------


def commits_of(db: Connection, package_id: int) -> list[CorpusCommit]:
    """The package's task commits, in manifest order."""
    return [
        CorpusCommit(*row)
        for row in db.execute(
            "SELECT id, package_id, sha, parent, message, author_date, lines_added, "
            "lines_deleted, requirement_set FROM commits WHERE package_id = ? ORDER BY id",
            [package_id],
        ).fetchall()
    ]


def commit_counts(db: Connection) -> dict[int, int]:
    """package id → how many commits it has (packages without commits are left out)."""
    return dict(
        db.execute("SELECT package_id, COUNT(*) FROM commits GROUP BY package_id").fetchall()
    )


def add_commits(db: Connection, package_id: int, commits: Iterable[NewCommit]) -> None:
    """Insert the package's commits (the caller holds the transaction)."""
    conn = db.conn if isinstance(db, sqlite_utils.Database) else db
    conn.executemany(
        """INSERT INTO commits (package_id, sha, parent, message, author_date, files,
           lines_added, lines_deleted, requirement_set) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            (
                package_id,
                c.sha,
                c.parent,
                c.message,
                c.author_date,
                c.files,
                c.lines_added,
                c.lines_deleted,
                c.requirement_set,
            )
            for c in commits
        ],
    )


# --- ingest events -----------------------------------------------------------------------


def add_event(
    db: Connection,
    source: str,
    outcome: str,
    *,
    package_id: int | None = None,
    quarantine_path: str | None = None,
    reasons: list[str] | None = None,
) -> None:
    """Record what an ingest did with `source`."""
    db.execute(
        "INSERT INTO ingest_events (at, source, outcome, package_id, quarantine_path, reasons)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [now_iso(), source, outcome, package_id, quarantine_path, json.dumps(reasons or [])],
    )


def events(db: Connection, limit: int) -> list[IngestEvent]:
    """The latest `limit` ingest events, newest first."""
    return [
        IngestEvent(at, source, outcome, tuple(json.loads(reasons)))
        for at, source, outcome, reasons in db.execute(
            "SELECT at, source, outcome, reasons FROM ingest_events ORDER BY id DESC LIMIT ?",
            [limit],
        ).fetchall()
    ]
