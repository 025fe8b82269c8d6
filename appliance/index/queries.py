"""Reading a snapshot back: its files, symbols, import graph and file contents.

Every answer is of one snapshot only: rows shared between snapshots (blobs, symbols) are
reached through that snapshot's file list, so nothing of another commit shows through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlite_utils

from appliance.errors import IndexingError
from appliance.index.snapshot import FileEntry
from appliance.index.symbols import Symbol


def require_snapshot(db: sqlite_utils.Database, snapshot_id: int) -> None:
    if db.execute("SELECT 1 FROM index_snapshots WHERE id = ?", [snapshot_id]).fetchone() is None:
        raise IndexingError(
            f"no index snapshot {snapshot_id}", "index the commit first (index_commit)"
        )


def files(db: sqlite_utils.Database, snapshot_id: int) -> list[FileEntry]:
    require_snapshot(db, snapshot_id)
    rows = db.execute(
        "SELECT path, size, language, blob FROM index_files WHERE snapshot_id = ? ORDER BY path",
        [snapshot_id],
    )
    return [FileEntry(*row) for row in rows]


def symbols(
    db: sqlite_utils.Database, snapshot_id: int, paths: Sequence[str] | None = None
) -> list[Symbol]:
    """The Python symbols of the snapshot, or of `paths` in it, by path and line."""
    require_snapshot(db, snapshot_id)
    query = (
        "SELECT f.path, s.name, s.qualname, s.kind, s.start_line, s.end_line, s.signature, "
        "s.docstring FROM index_files f JOIN index_symbols s ON s.blob = f.blob "
        "WHERE f.snapshot_id = ? AND f.language = 'python'"  # a blob may also be a .txt
    )
    if paths is None:
        rows = db.execute(query + " ORDER BY f.path, s.start_line, s.id", [snapshot_id])
        return [Symbol(*row) for row in rows]
    wanted = sorted(set(paths))
    found = []
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        rows = db.execute(
            f"{query} AND f.path IN ({','.join('?' * len(part))})", [snapshot_id, *part]
        )
        found.extend(Symbol(*row) for row in rows)
    return sorted(found, key=lambda s: (s.path, s.start, s.end, s.qualname))


def imports(db: sqlite_utils.Database, snapshot_id: int) -> list[tuple[str, str]]:
    """(importer, imported) path pairs, sorted."""
    require_snapshot(db, snapshot_id)
    rows = db.execute(
        "SELECT importer, imported FROM index_imports WHERE snapshot_id = ? "
        "ORDER BY importer, imported",
        [snapshot_id],
    )
    return [(a, b) for a, b in rows]


def neighbours(db: sqlite_utils.Database, snapshot_id: int, paths: Iterable[str]) -> set[str]:
    """Files that import one of `paths` or are imported by one (`paths` themselves left out)."""
    wanted = set(paths)
    found = set()
    for importer, imported in imports(db, snapshot_id):
        if importer in wanted:
            found.add(imported)
        if imported in wanted:
            found.add(importer)
    return found - wanted


def file_text(db: sqlite_utils.Database, snapshot_id: int, path: str) -> str:
    """The file's content as indexed (UTF-8; undecodable bytes as U+FFFD)."""
    require_snapshot(db, snapshot_id)
    row = db.execute(
        "SELECT b.content_kind, b.content FROM index_files f JOIN index_blobs b "
        "ON b.blob = f.blob WHERE f.snapshot_id = ? AND f.path = ?",
        [snapshot_id, path],
    ).fetchone()
    if row is None:
        raise IndexingError(f"{path!r} is not a file of index snapshot {snapshot_id}")
    kind, content = row
    if content is None:
        raise IndexingError(f"{path!r} has no text in the index ({kind.replace('_', ' ')})")
    return content
