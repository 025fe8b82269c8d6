"""Schema changes as named functions, applied once each, in order, and recorded.

Add a change by writing `mNNN_what(db)` at the end and registering it; never edit
one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlite_utils

MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]):
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_packages(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE packages (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            manifest_sha256 TEXT NOT NULL UNIQUE,
            path TEXT NOT NULL,  -- relative to FORGE_HOME: corpus/NAME-VERSION
            split TEXT CHECK (split IN ('train', 'eval')),
            description TEXT NOT NULL DEFAULT '',
            license TEXT NOT NULL DEFAULT '',
            python TEXT NOT NULL DEFAULT '',
            test_command TEXT NOT NULL,
            test_timeout_s REAL NOT NULL,
            requirements TEXT NOT NULL,
            ingested_at TEXT NOT NULL,
            UNIQUE (name, version)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE commits (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            sha TEXT NOT NULL,
            parent TEXT NOT NULL,
            message TEXT NOT NULL,
            author_date TEXT NOT NULL DEFAULT '',
            files TEXT NOT NULL,
            lines_added INTEGER NOT NULL,
            lines_deleted INTEGER NOT NULL,
            UNIQUE (package_id, sha)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ingest_events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            source TEXT NOT NULL,
            outcome TEXT NOT NULL
                CHECK (outcome IN ('accepted', 'rejected', 'duplicate', 'recovered')),
            package_id INTEGER REFERENCES packages(id),
            quarantine_path TEXT,
            reasons TEXT NOT NULL DEFAULT '[]'
        )
        """
    )
    db.execute("CREATE INDEX ingest_events_at ON ingest_events(at)")


@migration
def m002_harness(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE gold_results (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            sha TEXT NOT NULL,
            inputs_key TEXT NOT NULL,  -- what the result depends on; a new key means regrade
            status TEXT NOT NULL CHECK (status IN ('ok', 'infra')),
            usable INTEGER NOT NULL,
            reason TEXT NOT NULL,
            fail_to_pass TEXT NOT NULL,  -- JSON lists of test ids
            pass_to_pass TEXT NOT NULL,
            flaky TEXT NOT NULL,
            runs TEXT NOT NULL,  -- JSON: one summary per test run
            duration_s REAL NOT NULL,
            graded_at TEXT NOT NULL,
            UNIQUE (package_id, sha)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE patch_gradings (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            sha TEXT NOT NULL,
            patch_sha256 TEXT NOT NULL,
            verdict TEXT NOT NULL
                CHECK (verdict IN ('resolved', 'failed', 'not_applied', 'infra')),
            reason TEXT NOT NULL,
            result TEXT NOT NULL,  -- JSON: per-test outcomes and the run summary
            diff TEXT NOT NULL,
            graded_at TEXT NOT NULL
        )
        """
    )


@migration
def m003_model_calls(db: sqlite_utils.Database) -> None:
    # Training reads these rows: `prompt` is exactly what the model received.
    db.execute(
        """
        CREATE TABLE model_calls (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('chat', 'completion', 'judge')),
            role TEXT NOT NULL,
            base TEXT NOT NULL,
            base_sha256 TEXT NOT NULL,
            adapter TEXT,  -- adapter version, NULL for the bare base
            messages TEXT,  -- JSON, for chat calls: what the caller asked
            prompt TEXT NOT NULL,  -- the rendered prompt the model received
            params TEXT NOT NULL,  -- JSON
            output TEXT NOT NULL,
            finish_reason TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            duration_s REAL NOT NULL,
            error TEXT,
            extra TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute("CREATE INDEX model_calls_at ON model_calls(at)")


@migration
def m004_index(db: sqlite_utils.Database) -> None:
    # Everything derived from a file's content is keyed by its blob hash, so a blob seen
    # in an earlier snapshot (of any package) is never parsed, chunked or embedded again.
    db.execute(
        """
        CREATE TABLE index_snapshots (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            sha TEXT NOT NULL,
            files INTEGER NOT NULL,
            new_blobs INTEGER NOT NULL,  -- blobs this snapshot was the first to index
            seconds REAL NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (package_id, sha)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE index_blobs (
            blob TEXT PRIMARY KEY,  -- git blob hash
            size INTEGER NOT NULL,
            content_kind TEXT NOT NULL CHECK (content_kind IN ('text', 'binary', 'too_large')),
            content TEXT,  -- the decoded text; NULL unless content_kind = 'text'
            python INTEGER NOT NULL DEFAULT 0,  -- parsed as Python (symbols, imports)
            parse_error TEXT,  -- why the Python parse failed
            imports TEXT NOT NULL DEFAULT '[]'  -- JSON: the import statements, unresolved
        )
        """
    )
    db.execute(
        """
        CREATE TABLE index_files (
            snapshot_id INTEGER NOT NULL REFERENCES index_snapshots(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            blob TEXT NOT NULL REFERENCES index_blobs(blob),
            size INTEGER NOT NULL,
            language TEXT NOT NULL,
            PRIMARY KEY (snapshot_id, path)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX index_files_blob ON index_files(blob)")
    db.execute(
        """
        CREATE TABLE index_symbols (
            id INTEGER PRIMARY KEY,
            blob TEXT NOT NULL REFERENCES index_blobs(blob) ON DELETE CASCADE,
            name TEXT NOT NULL,
            qualname TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('function', 'method', 'class')),
            start_line INTEGER NOT NULL,
            end_line INTEGER NOT NULL,
            signature TEXT NOT NULL,
            docstring TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX index_symbols_blob ON index_symbols(blob, start_line)")
    db.execute(
        """
        CREATE TABLE index_imports (
            snapshot_id INTEGER NOT NULL REFERENCES index_snapshots(id) ON DELETE CASCADE,
            importer TEXT NOT NULL,  -- paths of files in the snapshot
            imported TEXT NOT NULL,
            PRIMARY KEY (snapshot_id, importer, imported)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TABLE index_chunks (
            id INTEGER PRIMARY KEY,
            blob TEXT NOT NULL REFERENCES index_blobs(blob) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            start_line INTEGER NOT NULL,
            end_line INTEGER NOT NULL,
            text TEXT NOT NULL,
            words INTEGER NOT NULL,  -- its length for bm25, counted as the FTS tokenizer does
            embedding_key TEXT NOT NULL,  -- sha256 of the text as embedded: equal keys share
            UNIQUE (blob, seq)              -- a vector, so an edit re-embeds only what changed
        )
        """
    )
    db.execute("CREATE INDEX index_chunks_embedding_key ON index_chunks(embedding_key)")
    # MiniLM (all-MiniLM-L6-v2) vectors, L2-normalised; rowid = index_chunks.id.
    db.execute(
        "CREATE VIRTUAL TABLE index_chunk_vectors USING vec0("
        "chunk_id INTEGER PRIMARY KEY, embedding float[384])"
    )
    # External content: the text is stored once, in index_chunks; rowid = index_chunks.id.
    db.execute(
        "CREATE VIRTUAL TABLE index_chunk_text USING fts5("
        "text, content='index_chunks', content_rowid='id', tokenize='porter unicode61')"
    )


@migration
def m005_campaigns(db: sqlite_utils.Database) -> None:
    from appliance.campaign.store import SCHEMA

    for statement in SCHEMA:
        db.execute(statement)


@migration
def m006_datasets(db: sqlite_utils.Database) -> None:
    from appliance.datasets.versions import SCHEMA

    for statement in SCHEMA:
        db.execute(statement)


@migration
def m007_adapters(db: sqlite_utils.Database) -> None:
    from appliance.training.job import SCHEMA

    for statement in SCHEMA:
        db.execute(statement)


@migration
def m008_registry(db: sqlite_utils.Database) -> None:
    from appliance.registry.registry import SCHEMA
    from appliance.registry.split import backfill

    for statement in SCHEMA:
        db.execute(statement)
    backfill(db)  # packages ingested before the split was decided at ingest


@migration
def m009_evaluation(db: sqlite_utils.Database) -> None:
    from appliance.evaluation.store import SCHEMA

    for statement in SCHEMA:
        db.execute(statement)


@migration
def m010_jobs(db: sqlite_utils.Database) -> None:
    from appliance.jobs import SCHEMA

    for statement in SCHEMA:
        db.execute(statement)


@migration
def m011_job_results(db: sqlite_utils.Database) -> None:
    from appliance.jobs import SCHEMA_RESULT

    for statement in SCHEMA_RESULT:
        db.execute(statement)


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def applied(db: sqlite_utils.Database) -> set[str]:
    if "_migrations" not in db.table_names():
        return set()
    return {row["name"] for row in db["_migrations"].rows}


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = applied(db)
    ran = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        # One transaction per migration: a crash leaves it either applied and recorded,
        # or neither. Another process migrating at once waits on the lock, then skips.
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", [fn.__name__]).fetchone():
                db.conn.execute("ROLLBACK")
                continue
            fn(db)
            db.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                [fn.__name__, _utcnow()],
            )
            db.conn.execute("COMMIT")
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
        ran.append(fn.__name__)
    return ran


@migration
def m012_tampered_verdict(db: sqlite_utils.Database) -> None:
    # A graded run whose result channels disagree is "tampered" (appliance/harness/stream.py).
    # SQLite cannot widen a CHECK in place: both tables are rebuilt with the new list and
    # their rows copied over. Nothing references either table.
    db.execute(
        """
        CREATE TABLE patch_gradings_new (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            sha TEXT NOT NULL,
            patch_sha256 TEXT NOT NULL,
            verdict TEXT NOT NULL
                CHECK (verdict IN ('resolved', 'failed', 'not_applied', 'infra', 'tampered')),
            reason TEXT NOT NULL,
            result TEXT NOT NULL,  -- JSON: per-test outcomes, the run summary, flags
            diff TEXT NOT NULL,
            graded_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        "INSERT INTO patch_gradings_new (id, package_id, sha, patch_sha256, verdict, reason, "
        "result, diff, graded_at) SELECT id, package_id, sha, patch_sha256, verdict, reason, "
        "result, diff, graded_at FROM patch_gradings"
    )
    db.execute("DROP TABLE patch_gradings")
    db.execute("ALTER TABLE patch_gradings_new RENAME TO patch_gradings")
    db.execute(
        """
        CREATE TABLE triples_new (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            sha TEXT NOT NULL,
            sample INTEGER NOT NULL,
            snapshot_sha TEXT NOT NULL,  -- the parent commit: all the stages could see
            temperature REAL NOT NULL,
            seed INTEGER NOT NULL,
            stages TEXT NOT NULL,  -- JSON: per stage the context package, output, call id
            call_ids TEXT NOT NULL,  -- JSON list of model_calls ids
            edits TEXT NOT NULL,  -- JSON list of search/replace edits
            diff TEXT NOT NULL,
            outcome TEXT NOT NULL
                CHECK (outcome IN ('resolved', 'failed', 'not_applied', 'infra', 'tampered')),
            reason TEXT NOT NULL,
            grading TEXT NOT NULL,  -- JSON: per-test outcomes of the graded run, flags
            alignment TEXT NOT NULL,  -- JSON: plan and edits against the real commit
            seconds TEXT NOT NULL,  -- JSON: where the time went
            created_at TEXT NOT NULL,
            UNIQUE (package_id, sha, sample)
        )
        """
    )
    db.execute(
        "INSERT INTO triples_new (id, package_id, sha, sample, snapshot_sha, temperature, seed, "
        "stages, call_ids, edits, diff, outcome, reason, grading, alignment, seconds, "
        "created_at) SELECT id, package_id, sha, sample, snapshot_sha, temperature, seed, "
        "stages, call_ids, edits, diff, outcome, reason, grading, alignment, seconds, "
        "created_at FROM triples"
    )
    db.execute("DROP TABLE triples")
    db.execute("ALTER TABLE triples_new RENAME TO triples")


@migration
def m013_requirement_sets(db: sqlite_utils.Database) -> None:
    # Manifest schema 2: commits that declare different dependencies use different pinned
    # sets. A package keeps its sets (JSON list of lists), a commit the index of its own.
    # Rows from before have one set, `requirements`, used by every commit.
    db.execute("ALTER TABLE packages ADD COLUMN requirement_sets TEXT NOT NULL DEFAULT '[]'")
    db.execute("UPDATE packages SET requirement_sets = '[' || requirements || ']'")
    db.execute("ALTER TABLE commits ADD COLUMN requirement_set INTEGER NOT NULL DEFAULT 0")
