"""Searching one snapshot's chunks: by embedding similarity and by full text (FTS5, bm25).

Chunks are shared between snapshots (they are keyed by blob), so both searches are
restricted to the blobs of the snapshot's files, and a hit is reported under each path
of the snapshot that holds the blob.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlite_utils

from appliance.index.embed import DIMENSIONS, default_embedder
from appliance.index.fts import bm25, match_expression, occurrences, phrases, words
from appliance.index.queries import require_snapshot

SNAPSHOT_BLOBS = "SELECT DISTINCT blob FROM index_files WHERE snapshot_id = ?"


@dataclass(frozen=True)
class ChunkHit:
    path: str
    start: int  # first line of the chunk (1-based)
    end: int  # last line, inclusive
    text: str
    score: float  # cosine similarity ("similar") or bm25 ("fulltext"): higher is better
    why: str  # "similar" | "fulltext"


def similar(
    db: sqlite_utils.Database, snapshot_id: int, text: str, k: int = 10, embedder=None
) -> list[ChunkHit]:
    """The k chunks of the snapshot closest in meaning to `text` (cosine similarity)."""
    require_snapshot(db, snapshot_id)
    if k <= 0:
        return []
    # Exact search with NumPy over this snapshot's vectors, not vec0's KNN: vec0 cannot
    # restrict a KNN query to a set of blobs (chunks are shared between snapshots and
    # packages), and over-fetching then filtering can miss when other snapshots crowd the
    # top. A repository has a few thousand chunks; brute force measured as fast as vec0
    # at 20,000 rows on a 2-core development machine. CROSS JOIN keeps SQLite from
    # scanning the whole vec0 table: it reads the snapshot's chunk ids, then looks each
    # vector up by id.
    rows = db.execute(
        f"SELECT c.id, v.embedding FROM ({SNAPSHOT_BLOBS}) AS f "
        "CROSS JOIN index_chunks AS c ON c.blob = f.blob "
        "CROSS JOIN index_chunk_vectors AS v ON v.chunk_id = c.id ORDER BY c.blob, c.seq",
        [snapshot_id],
    ).fetchall()
    if not rows:
        return []
    ids = np.array([r[0] for r in rows])
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
    matrix = matrix.reshape(len(rows), DIMENSIONS)
    query = (embedder or default_embedder()).embed([text])[0]
    scores = matrix @ query
    top = np.argsort(-scores, kind="stable")[:k]
    ranked = [(int(ids[i]), float(scores[i])) for i in top]
    return _hits(db, snapshot_id, ranked, "similar", k)


def fulltext(
    db: sqlite_utils.Database, snapshot_id: int, query: str, k: int = 10
) -> list[ChunkHit]:
    """The k chunks of the snapshot that best match the words of `query`: any word may
    match (OR), scored by bm25 over the snapshot's chunks (fts.py says why not FTS5's)."""
    require_snapshot(db, snapshot_id)
    wanted = phrases(query)
    if not wanted or k <= 0:
        return []
    chunks, average = db.execute(
        f"SELECT count(*), avg(words) FROM index_chunks WHERE blob IN ({SNAPSHOT_BLOBS})",
        [snapshot_id],
    ).fetchone()
    holding = {}
    for phrase in wanted:
        rows = db.execute(
            "SELECT t.rowid FROM index_chunk_text AS t JOIN index_chunks AS c ON c.id = t.rowid "
            f"WHERE index_chunk_text MATCH ? AND c.blob IN ({SNAPSHOT_BLOBS})",
            [match_expression(phrase), snapshot_id],
        )
        holding[phrase] = {rowid for (rowid,) in rows}
    scores: dict[int, tuple[float, str, int]] = {}  # chunk id → (score, blob, seq)
    candidates = sorted(set().union(*holding.values()))
    for start in range(0, len(candidates), 500):
        part = candidates[start : start + 500]
        rows = db.execute(
            f"SELECT id, blob, seq, text, words FROM index_chunks "
            f"WHERE id IN ({','.join('?' * len(part))})",
            part,
        )
        for chunk_id, blob, seq, text, length in rows:
            tokens = words(text)
            score = 0.0
            for phrase, ids in holding.items():
                if chunk_id in ids:
                    # A stemmed match (FTS5 uses the porter stemmer) counts once.
                    tf = occurrences(tokens, phrase) or 1
                    score += bm25(tf, len(ids), chunks, length, average)
            scores[chunk_id] = (score, blob, seq)
    # Ties go by content (blob, seq), never by row id: the order rows were written in
    # depends on what else was indexed before.
    order = sorted(scores, key=lambda c: (-scores[c][0], scores[c][1], scores[c][2]))
    return _hits(db, snapshot_id, [(c, scores[c][0]) for c in order], "fulltext", k)


def _hits(
    db: sqlite_utils.Database, snapshot_id: int, ranked: list[tuple[int, float]], why: str, k: int
) -> list[ChunkHit]:
    hits: list[ChunkHit] = []
    for chunk_id, score in ranked:
        rows = db.execute(
            "SELECT f.path, c.start_line, c.end_line, c.text FROM index_chunks c "
            "JOIN index_files f ON f.blob = c.blob AND f.snapshot_id = ? "
            "WHERE c.id = ? ORDER BY f.path",
            [snapshot_id, chunk_id],
        )
        hits.extend(ChunkHit(path, start, end, text, score, why) for path, start, end, text in rows)
        if len(hits) >= k:
            break
    return hits[:k]
