"""The repository index: one commit's files, Python symbols, import graph and text chunks
(embedded with MiniLM into sqlite-vec, and searchable with FTS5), read from the bare
corpus repository and keyed by blob hash so the next commit re-indexes only what changed.

    snapshot = index_commit(db, repo, parent_sha, package_id=pkg)
    similar(db, snapshot.id, task_text)  # → [ChunkHit(path, start, end, text, score, why)]

Modules: snapshot (listing and reading a commit's tree), symbols, imports, chunks, embed,
analyse (what one blob yields), store (writing), indexer (index_commit), queries and
search (reading a snapshot back).
"""

from appliance.index.embed import Embedder, default_embedder
from appliance.index.indexer import Snapshot, index_commit
from appliance.index.queries import file_text, files, imports, neighbours, symbols
from appliance.index.search import ChunkHit, fulltext, similar
from appliance.index.snapshot import FileEntry
from appliance.index.symbols import Symbol

__all__ = [
    "ChunkHit",
    "Embedder",
    "FileEntry",
    "Snapshot",
    "Symbol",
    "default_embedder",
    "file_text",
    "files",
    "fulltext",
    "imports",
    "index_commit",
    "neighbours",
    "similar",
    "symbols",
]
