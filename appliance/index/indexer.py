"""`index_commit`: index one commit of a corpus repository, reusing every blob seen before.

List the commit's tree → analyse the blobs not yet in the index, a batch at a time, and
embed those of their chunks whose text has no vector yet → resolve the import graph over
the whole tree → record the snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils

from appliance.errors import IndexingError
from appliance.index.analyse import (
    MAX_BLOB_BYTES,
    BlobAnalysis,
    analyse_blob,
    analyse_python,
)
from appliance.index.chunks import Chunk
from appliance.index.embed import DIMENSIONS, default_embedder, embedding_key
from appliance.index.imports import resolve_imports
from appliance.index.snapshot import FileEntry, list_files, read_blobs, resolve_commit
from appliance.index.store import (
    blob_imports,
    blob_texts,
    find_snapshot,
    known_blobs,
    known_vectors,
    store_blobs,
    store_python,
    store_snapshot,
)
from appliance.packages.corpus import package_by_id
from appliance.records import from_row

BLOB_BATCH = 64  # blobs analysed, embedded and committed together


@dataclass(frozen=True)
class Snapshot:
    id: int
    package_id: int
    sha: str
    files: int
    new_blobs: int  # blobs this snapshot was the first to index (chunked and embedded)
    seconds: float


def index_commit(
    db: sqlite_utils.Database,
    repo: Path,
    sha: str,
    *,
    package_id: int,
    embedder=None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Snapshot:
    """Index commit `sha` of the bare repository `repo` for package `package_id`.

    Idempotent: an already indexed (package, commit) returns its Snapshot at once. Only
    blobs not yet in the database are read and chunked, and only chunks whose text has
    no vector yet are embedded (with `embedder`, or the process's default MiniLM, loaded
    only when there is something to embed). `on_progress(done, total)` is called before
    the first and after each batch of new blobs.
    """
    started = time.perf_counter()
    done = find_snapshot(db, package_id, sha)
    if done is None:
        sha = resolve_commit(repo, sha)
        done = find_snapshot(db, package_id, sha)
    if done is not None:
        return _snapshot(done)
    if package_by_id(db, package_id) is None:
        raise IndexingError(f"no package with id {package_id}", "ingest the package first")
    files = list_files(repo, sha)
    python = {f.blob for f in files if f.language == "python"}
    markdown = {f.blob for f in files if f.language == "markdown"}
    sizes = {f.blob: f.size for f in files}
    known = known_blobs(db, sizes)
    todo = sorted(b for b in sizes if b not in known)
    new_blobs = 0
    if on_progress:
        on_progress(0, len(todo))
    for start in range(0, len(todo), BLOB_BATCH):
        batch = todo[start : start + BLOB_BATCH]
        readable = [b for b in batch if sizes[b] <= MAX_BLOB_BYTES]
        contents = dict(read_blobs(repo, readable))
        analyses = [
            analyse_blob(b, sizes[b], contents.get(b), python=b in python, markdown=b in markdown)
            for b in batch
        ]
        vectors = _vectors(db, [c for a in analyses for c in a.chunks], embedder)
        new_blobs += store_blobs(db, analyses, vectors)
        if on_progress:
            on_progress(start + len(batch), len(todo))
    _add_python(db, {b for b in python if b in known and not known[b].python})
    edges = _import_edges(db, files)
    row = store_snapshot(
        db,
        package_id=package_id,
        sha=sha,
        files=files,
        edges=edges,
        new_blobs=new_blobs,
        seconds=time.perf_counter() - started,
    )
    return _snapshot(row)


def _vectors(db: sqlite_utils.Database, chunks: list[Chunk], embedder) -> np.ndarray:
    """One vector per chunk: reused where a chunk with the same text (whitespace aside)
    has one, as most chunks of an edited file do; embedded otherwise."""
    keys = [embedding_key(c.text) for c in chunks]
    found = known_vectors(db, keys)
    missing = {k: c.text for k, c in zip(keys, chunks, strict=True) if k not in found}
    if missing:
        vectors = (embedder or default_embedder()).embed(list(missing.values()))
        found.update(zip(missing, vectors, strict=True))
    if not chunks:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return np.stack([found[k] for k in keys])


def _add_python(db: sqlite_utils.Database, blobs: set[str]) -> None:
    """Blobs indexed before under another name (a .txt renamed .py): parse them now."""
    if not blobs:
        return
    analyses = []
    for blob, text in sorted(blob_texts(db, blobs).items()):
        parsed = analyse_python(text)
        analyses.append(
            BlobAnalysis(
                blob,
                len(text.encode()),
                "text",
                text,
                python=True,
                parse_error=parsed.error,
                imports=parsed.imports,
                symbols=parsed.symbols,
            )
        )
    store_python(db, analyses)


def _import_edges(db: sqlite_utils.Database, files: list[FileEntry]) -> set[tuple[str, str]]:
    statements = blob_imports(db, [f.blob for f in files if f.language == "python"])
    by_path = {f.path: statements[f.blob] for f in files if f.blob in statements}
    return resolve_imports(by_path, [f.path for f in files])


def _snapshot(row: dict) -> Snapshot:
    return from_row(Snapshot, row)
