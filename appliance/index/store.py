"""Writing the index to the database (tables of migration m004_index).

Blob rows (content, symbols, chunks, vectors, full-text rows) are written a batch at a
time, each batch in its own transaction: they depend on content alone, so a batch
committed before a crash is simply found again by the next run. The snapshot (its
files and import edges) is written last, in one transaction, so a snapshot row exists
only when everything it refers to does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import sqlite_utils

from appliance.clock import now_iso
from appliance.index.analyse import BlobAnalysis
from appliance.index.embed import embedding_key
from appliance.index.fts import words
from appliance.index.imports import ImportStatement, from_json, to_json
from appliance.index.snapshot import FileEntry
from appliance.store import transaction

SQL_VARIABLES = 500  # parameters per IN (...) list, well below SQLite's limit


@dataclass(frozen=True)
class StoredBlob:
    blob: str
    content_kind: str
    python: bool


def known_blobs(db: sqlite_utils.Database, blobs: Iterable[str]) -> dict[str, StoredBlob]:
    """Those of `blobs` already in the index."""
    found = {}
    for part in _parts(sorted(set(blobs))):
        marks = ",".join("?" * len(part))
        for blob, kind, python in db.execute(
            f"SELECT blob, content_kind, python FROM index_blobs WHERE blob IN ({marks})", part
        ):
            found[blob] = StoredBlob(blob, kind, bool(python))
    return found


def blob_texts(db: sqlite_utils.Database, blobs: Iterable[str]) -> dict[str, str]:
    texts = {}
    for part in _parts(sorted(set(blobs))):
        marks = ",".join("?" * len(part))
        query = (
            f"SELECT blob, content FROM index_blobs WHERE content IS NOT NULL AND blob IN ({marks})"
        )
        texts.update(db.execute(query, part).fetchall())
    return texts


def blob_imports(
    db: sqlite_utils.Database, blobs: Iterable[str]
) -> dict[str, list[ImportStatement]]:
    found = {}
    for part in _parts(sorted(set(blobs))):
        marks = ",".join("?" * len(part))
        query = f"SELECT blob, imports FROM index_blobs WHERE python = 1 AND blob IN ({marks})"
        for blob, text in db.execute(query, part):
            found[blob] = from_json(text)
    return found


def known_vectors(db: sqlite_utils.Database, text_hashes: Iterable[str]) -> dict[str, np.ndarray]:
    """Stored vectors for these embedding keys (key → vector)."""
    found = {}
    for part in _parts(sorted(set(text_hashes))):
        marks = ",".join("?" * len(part))
        rows = db.execute(
            f"SELECT c.embedding_key, v.embedding FROM index_chunks AS c CROSS JOIN "
            f"index_chunk_vectors AS v ON v.chunk_id = c.id WHERE c.embedding_key IN ({marks})",
            part,
        )
        for key, vector in rows:
            found.setdefault(key, np.frombuffer(vector, dtype=np.float32))
    return found


def store_blobs(
    db: sqlite_utils.Database, analyses: Sequence[BlobAnalysis], vectors: np.ndarray
) -> int:
    """Store the analysed blobs and their chunks' vectors (rows in chunk order); return how
    many were new (one another process stored meanwhile is skipped)."""
    added = 0
    row = 0
    with transaction(db) as conn:
        present = set(known_blobs(db, [a.blob for a in analyses]))
        for analysis in analyses:
            count = len(analysis.chunks)
            if analysis.blob in present:
                row += count
                continue
            conn.execute(
                "INSERT INTO index_blobs (blob, size, content_kind, content, python, "
                "parse_error, imports) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    analysis.blob,
                    analysis.size,
                    analysis.content_kind,
                    analysis.content,
                    int(analysis.python),
                    analysis.parse_error,
                    to_json(analysis.imports),
                ],
            )
            _insert_symbols(conn, analysis)
            for chunk in analysis.chunks:
                chunk_id = conn.execute(
                    "INSERT INTO index_chunks (blob, seq, start_line, end_line, text, words, "
                    "embedding_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        analysis.blob,
                        chunk.seq,
                        chunk.start,
                        chunk.end,
                        chunk.text,
                        len(words(chunk.text)),
                        embedding_key(chunk.text),
                    ],
                ).lastrowid
                conn.execute(
                    "INSERT INTO index_chunk_vectors (chunk_id, embedding) VALUES (?, ?)",
                    [chunk_id, np.ascontiguousarray(vectors[row], dtype=np.float32).tobytes()],
                )
                conn.execute(
                    "INSERT INTO index_chunk_text (rowid, text) VALUES (?, ?)",
                    [chunk_id, chunk.text],
                )
                row += 1
            added += 1
    return added


def store_python(db: sqlite_utils.Database, analyses: Sequence[BlobAnalysis]) -> None:
    """Add Python symbols and imports to blobs first stored under a non-Python name."""
    with transaction(db) as conn:
        for analysis in analyses:
            updated = conn.execute(
                "UPDATE index_blobs SET python = 1, parse_error = ?, imports = ? "
                "WHERE blob = ? AND python = 0",
                [analysis.parse_error, to_json(analysis.imports), analysis.blob],
            ).rowcount
            if updated:
                _insert_symbols(conn, analysis)


def find_snapshot(db: sqlite_utils.Database, package_id: int, sha: str) -> dict | None:
    rows = list(
        db.query(
            "SELECT * FROM index_snapshots WHERE package_id = ? AND sha = ?", [package_id, sha]
        )
    )
    return rows[0] if rows else None


def store_snapshot(
    db: sqlite_utils.Database,
    *,
    package_id: int,
    sha: str,
    files: Sequence[FileEntry],
    edges: Iterable[tuple[str, str]],
    new_blobs: int,
    seconds: float,
) -> dict:
    """Record the snapshot with its files and import edges; when another process recorded
    the same (package, sha) meanwhile, return that one and write nothing."""
    with transaction(db) as conn:
        done = find_snapshot(db, package_id, sha)
        if done is not None:
            return done
        snapshot_id = conn.execute(
            "INSERT INTO index_snapshots (package_id, sha, files, new_blobs, seconds, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [package_id, sha, len(files), new_blobs, seconds, now_iso()],
        ).lastrowid
        conn.executemany(
            "INSERT INTO index_files (snapshot_id, path, blob, size, language) "
            "VALUES (?, ?, ?, ?, ?)",
            [(snapshot_id, f.path, f.blob, f.size, f.language) for f in files],
        )
        conn.executemany(
            "INSERT INTO index_imports (snapshot_id, importer, imported) VALUES (?, ?, ?)",
            [(snapshot_id, a, b) for a, b in sorted(edges)],
        )
    return find_snapshot(db, package_id, sha)


def _insert_symbols(conn, analysis: BlobAnalysis) -> None:
    conn.executemany(
        "INSERT INTO index_symbols (blob, name, qualname, kind, start_line, end_line, "
        "signature, docstring) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (analysis.blob, s.name, s.qualname, s.kind, s.start, s.end, s.signature, s.docstring)
            for s in analysis.symbols
        ],
    )


def _parts(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), SQL_VARIABLES):
        yield items[start : start + SQL_VARIABLES]
