"""Schema changes as named functions, applied once each, in order, and recorded.

Add a change by writing `mNNN_what(db)` at the end and registering it; never edit
one that has shipped. Each migration holds its SQL written out as it first ran and
imports nothing of Forge: SQLite keeps the text of every CREATE (whitespace and comments
included), so the schema a database ends with is exactly this file's history. A table's
owner changes its table by adding a migration here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import sqlite_utils

MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]):
    MIGRATIONS.append(fn)
    return fn


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def applied(db: sqlite_utils.Database) -> set[str]:
    if "_migrations" not in db.table_names():
        return set()
    return {row["name"] for row in db["_migrations"].rows}


def created_at(db: sqlite_utils.Database) -> str | None:
    """When the database was made: its first migration's time (ISO, UTC)."""
    if "_migrations" not in db.table_names():
        return None
    return db.execute("SELECT MIN(applied_at) FROM _migrations").fetchone()[0]


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
    _m004_files(db)
    _m004_symbols_and_chunks(db)


def _m004_files(db: sqlite_utils.Database) -> None:
    """m004's first half: snapshots, blobs and the files of each snapshot."""
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


def _m004_symbols_and_chunks(db: sqlite_utils.Database) -> None:
    """m004's second half: symbols, imports, chunks, their vectors and full-text index."""
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
    # m005–m011 were first written as constants at a module's top level: their SQL keeps
    # that indentation, byte for byte, as SQLite keeps it.
    db.execute(
        """
    CREATE TABLE triples (
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
        outcome TEXT NOT NULL  -- m012_tampered_verdict adds 'tampered' to this list
            CHECK (outcome IN ('resolved', 'failed', 'not_applied', 'infra')),
        reason TEXT NOT NULL,
        grading TEXT NOT NULL,  -- JSON: per-test outcomes of the graded run
        alignment TEXT NOT NULL,  -- JSON: plan and edits against the real commit
        seconds TEXT NOT NULL,  -- JSON: where the time went
        created_at TEXT NOT NULL,
        UNIQUE (package_id, sha, sample)
    )
    """
    )
    db.execute(
        """
    CREATE TABLE synthetic_pairs (
        id INTEGER PRIMARY KEY,
        package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
        sha TEXT NOT NULL,
        stage TEXT NOT NULL,
        input TEXT NOT NULL,  -- JSON
        target TEXT NOT NULL,  -- JSON
        created_at TEXT NOT NULL,
        UNIQUE (package_id, sha, stage)
    )
    """
    )


@migration
def m006_datasets(db: sqlite_utils.Database) -> None:
    db.execute(
        """
    CREATE TABLE dataset_rows (
        id INTEGER PRIMARY KEY,
        stage TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('sft', 'dpo')),
        key TEXT NOT NULL UNIQUE,  -- sha256 of the row's content: duplicates are refused
        task TEXT NOT NULL,  -- package@commit: rows never pair across tasks
        first_version INTEGER NOT NULL,
        row TEXT NOT NULL,  -- JSON, with its provenance
        created_at TEXT NOT NULL
    )
    """
    )
    db.execute("CREATE INDEX dataset_rows_stage ON dataset_rows(stage, kind, first_version)")
    db.execute(
        """
    CREATE TABLE dataset_versions (
        id INTEGER PRIMARY KEY,
        stage TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('sft', 'dpo')),
        version INTEGER NOT NULL,
        rows INTEGER NOT NULL,
        new_rows INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
        gates TEXT NOT NULL,  -- JSON: the measured rates
        reasons TEXT NOT NULL,  -- JSON: why it failed, one sentence per gate
        path TEXT NOT NULL,  -- relative to FORGE_HOME
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (stage, kind, version)
    )
    """
    )


@migration
def m007_adapters(db: sqlite_utils.Database) -> None:
    db.execute(
        """
    CREATE TABLE adapters (
        id INTEGER PRIMARY KEY,
        stage TEXT NOT NULL,
        version INTEGER NOT NULL,  -- N of {stage}-v{N}, monotonic per stage
        kind TEXT NOT NULL CHECK (kind IN ('sft', 'dpo')),
        status TEXT NOT NULL DEFAULT 'candidate',
        dataset TEXT NOT NULL,  -- the dataset version trained on, e.g. scope-sft-v3
        base TEXT NOT NULL,
        base_sha256 TEXT NOT NULL,
        hyperparameters TEXT NOT NULL,  -- JSON
        metrics TEXT NOT NULL,  -- JSON: steps, losses, tokens/s, recoveries
        path TEXT NOT NULL,  -- the GGUF adapter, relative to FORGE_HOME
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (stage, version)
    )
    """
    )


@migration
def m008_registry(db: sqlite_utils.Database) -> None:
    # Both triggers run the same checks (the text is kept byte for byte: see the docstring).
    checks = (
        "\n    SELECT RAISE(ABORT, 'adapters.status must be candidate, active, inactive "
        "or rejected')"
        "\n    WHERE NEW.status NOT IN ('candidate', 'active', 'inactive', 'rejected');"
        "\n    SELECT RAISE(ABORT, 'an adapter that is not servable cannot be active')"
        "\n    WHERE NEW.status = 'active' AND NEW.servable = 0;\n"
    )
    db.execute(
        "ALTER TABLE adapters ADD COLUMN servable INTEGER NOT NULL DEFAULT 1 "
        "CHECK (servable IN (0, 1))"
    )
    db.execute("ALTER TABLE adapters ADD COLUMN unservable_reason TEXT")
    # The database itself keeps a stage from having two active versions.
    db.execute("CREATE UNIQUE INDEX adapters_one_active ON adapters(stage) WHERE status = 'active'")
    db.execute(f"CREATE TRIGGER adapters_check_insert BEFORE INSERT ON adapters BEGIN {checks} END")
    db.execute(
        "CREATE TRIGGER adapters_check_update BEFORE UPDATE OF status, servable ON adapters "
        f"BEGIN {checks} END"
    )
    db.execute(
        """
    CREATE TABLE adapter_events (
        id INTEGER PRIMARY KEY,
        stage TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('promote', 'rollback', 'reject', 'invalidate')),
        from_version INTEGER,  -- in service before; NULL: the base
        to_version INTEGER,  -- in service after; NULL: the base (reject: the version rejected)
        forced INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
        decision_id INTEGER,  -- the stored gate decision behind it, if any
        note TEXT NOT NULL DEFAULT '',
        at TEXT NOT NULL
    )
    """
    )
    db.execute("CREATE INDEX adapter_events_stage ON adapter_events(stage, id)")
    _m008_backfill_split(db)  # packages ingested before the split was decided at ingest


def _m008_backfill_split(db: sqlite_utils.Database) -> None:
    # What ingest decided for a new package when m008 shipped, frozen here: an earlier
    # version's split, else `eval` for about 15 % of names (the default
    # evaluation.eval_fraction then) by a hash of the name, but `train` when dataset rows
    # were already made from it (their task is "NAME@COMMIT").
    eval_fraction = 0.15
    names = [r[0] for r in db.execute("SELECT DISTINCT name FROM packages WHERE split IS NULL")]
    for name in names:
        earlier = db.execute(
            "SELECT split FROM packages WHERE name = ? AND split IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            [name],
        ).fetchone()
        if earlier is not None:
            split = earlier[0]
        else:
            point = int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) / 2**64
            split = "eval" if point < eval_fraction else "train"
            prefix = f"{name}@"
            trained = db.execute(
                "SELECT COUNT(*) FROM dataset_rows WHERE substr(task, 1, ?) = ?",
                [len(prefix), prefix],
            ).fetchone()[0]
            if split == "eval" and trained:
                split = "train"
        db.execute("UPDATE packages SET split = ? WHERE name = ? AND split IS NULL", [split, name])


@migration
def m009_evaluation(db: sqlite_utils.Database) -> None:
    db.execute(
        """
    CREATE TABLE eval_runs (
        id INTEGER PRIMARY KEY,
        stage TEXT NOT NULL,
        adapter TEXT NOT NULL,  -- 'scope-v2', or 'base'
        adapter_sha256 TEXT NOT NULL,  -- the adapter file's, or the base's for 'base'
        base_sha256 TEXT NOT NULL,
        examples_key TEXT NOT NULL,  -- the example set, prompts and decoding settings
        source TEXT NOT NULL,  -- eval_packages | held_out_commits
        examples INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'done')),
        summary TEXT,  -- JSON: metric -> {value, n}
        created_at TEXT NOT NULL,
        finished_at TEXT,
        UNIQUE (stage, adapter_sha256, base_sha256, examples_key)
    )
    """
    )
    db.execute(
        """
    CREATE TABLE eval_examples (
        run_id INTEGER NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
        example TEXT NOT NULL,  -- package@sha
        answer TEXT NOT NULL,  -- the raw model answer(s)
        detail TEXT NOT NULL,  -- JSON: call ids, errors, harness verdict
        PRIMARY KEY (run_id, example)
    )
    """
    )
    db.execute(
        """
    CREATE TABLE eval_outcomes (
        run_id INTEGER NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
        example TEXT NOT NULL,
        item TEXT NOT NULL,  -- a file or symbol for per-item metrics, '' per example
        metric TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (run_id, example, item, metric)
    )
    """
    )
    db.execute(
        """
    CREATE TABLE gate_decisions (
        id INTEGER PRIMARY KEY,
        stage TEXT NOT NULL,
        candidate TEXT NOT NULL,  -- scope-v3
        baseline TEXT NOT NULL,  -- scope-v2, or 'base'
        candidate_run INTEGER REFERENCES eval_runs(id),
        baseline_run INTEGER REFERENCES eval_runs(id),
        verdict TEXT NOT NULL CHECK (verdict IN ('promote', 'reject')),
        report TEXT NOT NULL,  -- JSON: the gate's decision, metrics, the example source
        created_at TEXT NOT NULL
    )
    """
    )


@migration
def m010_jobs(db: sqlite_utils.Database) -> None:
    db.execute(
        """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,  -- ingest | campaign | train | evaluate | cycle | backup
        args TEXT NOT NULL DEFAULT '{}',  -- JSON
        key TEXT,  -- at most one live job per key
        heavy INTEGER NOT NULL DEFAULT 0,  -- loads a model: one at a time
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 3,
        not_before TEXT NOT NULL,  -- not claimed before this (backoff)
        queued_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        error TEXT,
        log TEXT,  -- the run's log file, relative to FORGE_HOME
        progress TEXT NOT NULL DEFAULT '{}'  -- JSON, written by the running job
    )
    """
    )
    db.execute(
        "CREATE UNIQUE INDEX jobs_one_live_per_key ON jobs(key) "
        "WHERE key IS NOT NULL AND status IN ('queued', 'running')"
    )
    db.execute("CREATE INDEX jobs_status ON jobs(status, not_before)")


@migration
def m011_job_results(db: sqlite_utils.Database) -> None:
    # What a finished job returned (JSON), for whoever asked for it to read.
    db.execute("ALTER TABLE jobs ADD COLUMN result TEXT")


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


@migration
def m014_answers_in_the_call_log(db: sqlite_utils.Database) -> None:
    # A stage's answer is stored once: as its call's output in model_calls. Until now each
    # stage in triples.stages (JSON) also held a copy, "raw", beside its call_id. The copy
    # goes wherever the call log holds that call with the same output; a stage whose call
    # was never logged (or differs) keeps it, since nothing else would hold the answer.
    # The rest of the JSON is written back as it was (json.dumps keeps the key order).
    rows = db.execute("SELECT id, stages FROM triples ORDER BY id").fetchall()
    for triple_id, text in rows:
        stages = json.loads(text)
        changed = False
        for stage in stages.values():
            if not isinstance(stage, dict) or "raw" not in stage:
                continue
            logged = db.execute(
                "SELECT output FROM model_calls WHERE id = ?", [stage.get("call_id")]
            ).fetchone()
            if logged is not None and logged[0] == stage["raw"]:
                del stage["raw"]
                changed = True
        if changed:
            db.execute(
                "UPDATE triples SET stages = ? WHERE id = ?", [json.dumps(stages), triple_id]
            )


@migration
def m015_dataset_holdout(db: sqlite_utils.Database) -> None:
    # A dataset version records the hold-out it was built against (JSON: the commits held
    # out of training per package name; '{}' for versions made before) and how many rows
    # it dropped. A row whose commit is held out later (or whose package moved to eval) is
    # dropped from the version that found it so: dropped_in (NULL: still included).
    db.execute("ALTER TABLE dataset_versions ADD COLUMN holdout TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE dataset_versions ADD COLUMN dropped_rows INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE dataset_rows ADD COLUMN dropped_in INTEGER")


@migration
def m016_insufficient_verdict(db: sqlite_utils.Database) -> None:
    # The gate's third verdict: "insufficient" (fewer compared tasks than
    # evaluation.min_tasks). SQLite cannot widen a CHECK in place: gate_decisions is
    # rebuilt with the new list and its rows copied over. No table references it
    # (adapter_events.decision_id is a plain integer).
    db.execute(
        """
        CREATE TABLE gate_decisions_new (
            id INTEGER PRIMARY KEY,
            stage TEXT NOT NULL,
            candidate TEXT NOT NULL,  -- scope-v3
            baseline TEXT NOT NULL,  -- scope-v2, or 'base'
            candidate_run INTEGER REFERENCES eval_runs(id),
            baseline_run INTEGER REFERENCES eval_runs(id),
            verdict TEXT NOT NULL CHECK (verdict IN ('promote', 'reject', 'insufficient')),
            report TEXT NOT NULL,  -- JSON: the gate's decision, metrics, the example source
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        "INSERT INTO gate_decisions_new (id, stage, candidate, baseline, candidate_run, "
        "baseline_run, verdict, report, created_at) SELECT id, stage, candidate, baseline, "
        "candidate_run, baseline_run, verdict, report, created_at FROM gate_decisions"
    )
    db.execute("DROP TABLE gate_decisions")
    db.execute("ALTER TABLE gate_decisions_new RENAME TO gate_decisions")


@migration
def m017_call_source(db: sqlite_utils.Database) -> None:
    # Who asked for a model call: NULL for Forge's own work (campaign, evaluation, …),
    # 'serve' for a request to `forge serve`. Datasets take calls only through the
    # campaign's records, never a served call.
    db.execute("ALTER TABLE model_calls ADD COLUMN source TEXT")


@migration
def m018_solve_runs(db: sqlite_utils.Database) -> None:
    # `forge solve`: an operator's own task run through the five stages, recorded with what
    # the stages saw and answered, the diff, its test outcome and the operator's feedback.
    # A dataset version also records the operator runs whose rows it held back, and why
    # (JSON list; '[]' for versions made before).
    db.execute(
        """
        CREATE TABLE solve_runs (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES packages(id) ON DELETE CASCADE,
            package TEXT NOT NULL,  -- NAME-VERSION when the run was made
            repo_path TEXT,  -- the operator's checkout (--repo); NULL: the package's own repo
            snapshot_sha TEXT NOT NULL,  -- the commit whose tree the stages saw
            contains TEXT NOT NULL,  -- JSON: the package's commits the snapshot contains
            task TEXT NOT NULL,
            stages TEXT NOT NULL,  -- JSON: per stage the context package, output, call id
            call_ids TEXT NOT NULL,  -- JSON list of model_calls ids
            edits TEXT NOT NULL,  -- JSON list of the code stage's search/replace edits
            patch TEXT NOT NULL,  -- the edits as a unified diff; '' when none applied
            outcome TEXT NOT NULL CHECK (outcome IN ('diff', 'no_diff')),
            reason TEXT NOT NULL,
            seconds TEXT NOT NULL,  -- JSON: where the time went
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            test TEXT,  -- JSON: the test outcome (--test); NULL: not tested
            tested_at TEXT,
            applied_at TEXT,  -- when --apply wrote the diff into repo_path
            feedback TEXT CHECK (feedback IN ('good', 'bad')),  -- NULL: none yet
            feedback_patch TEXT,  -- the operator's corrected patch, as a unified diff
            feedback_targets TEXT,  -- JSON: per stage what the corrected patch implies
            feedback_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX solve_runs_package ON solve_runs(package_id)")
    db.execute("ALTER TABLE dataset_versions ADD COLUMN held_back TEXT NOT NULL DEFAULT '[]'")


@migration
def m019_alerts(db: sqlite_utils.Database) -> None:
    # What forged's alert rules found (appliance/ops/alerts.py owns it). An alert is
    # raised, may be acknowledged, and is cleared when its rule no longer finds it; found
    # again later, it is a new row. At most one open (not cleared) row per rule and subject.
    db.execute(
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,  -- job_failed, cycle_stale, gate_stuck, disk_low, ...
            subject TEXT NOT NULL,  -- what it is about: a job kind, a model; '' for the box
            severity TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
            state TEXT NOT NULL CHECK (state IN ('raised', 'acknowledged', 'cleared')),
            message TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}',  -- JSON: what the rule measured
            raised_at TEXT NOT NULL,
            seen_at TEXT NOT NULL,  -- the last evaluation that found it
            acknowledged_at TEXT,
            cleared_at TEXT
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX alerts_one_open ON alerts(rule, subject) WHERE state != 'cleared'"
    )


@migration
def m020_data_packages(db: sqlite_utils.Database) -> None:
    # Data packages (a teacher's rows carried over the air gap, appliance/datapackages/):
    # one row per ingested package, whose name and version, and whose rows (the sha256
    # of its files' hashes), are each ingested once; its rows as the package wrote them.
    # A dataset version records what it took from each source (campaign, import:NAME-
    # VERSION, …) and what it dropped and why (JSON; '{}' for versions made before).
    db.execute(
        """
        CREATE TABLE data_packages (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            manifest_sha256 TEXT NOT NULL,
            content_sha256 TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL,
            generator TEXT NOT NULL,
            model TEXT NOT NULL,
            license TEXT NOT NULL,
            created TEXT NOT NULL,
            rows TEXT NOT NULL,  -- JSON: "STAGE/KIND" -> rows
            ingested_at TEXT NOT NULL,
            UNIQUE (name, version)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE data_package_rows (
            id INTEGER PRIMARY KEY,
            package_id INTEGER NOT NULL REFERENCES data_packages(id) ON DELETE CASCADE,
            stage TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('sft', 'dpo')),
            line INTEGER NOT NULL,  -- in the package's STAGE.jsonl
            row TEXT NOT NULL  -- JSON, the line as the package wrote it
        )
        """
    )
    db.execute("CREATE INDEX data_package_rows_stage ON data_package_rows(stage, kind)")
    db.execute("ALTER TABLE dataset_versions ADD COLUMN sources TEXT NOT NULL DEFAULT '{}'")


@migration
def m021_critic(db: sqlite_utils.Database) -> None:
    # The calibrated critic (appliance/datasets/critic.py): each calibration of a stage's
    # judges against the pairs the harness decided (agreement and its Wilson interval),
    # and the labels it gave the pairs the harness could not decide (label NULL: no
    # answer scored critic_min_score).
    db.execute(
        """
        CREATE TABLE critic_calibrations (
            id INTEGER PRIMARY KEY,
            stage TEXT NOT NULL,
            judges TEXT NOT NULL,  -- JSON: base names
            lam REAL NOT NULL,
            min_score REAL NOT NULL,
            pairs INTEGER NOT NULL,  -- harness-decided pairs judged
            agreed INTEGER NOT NULL,
            low REAL NOT NULL,
            high REAL NOT NULL,
            skipped INTEGER NOT NULL,  -- pairs too long for a judge's context
            labelled INTEGER NOT NULL,
            undecided INTEGER NOT NULL,
            details TEXT NOT NULL,  -- JSON: per calibration pair, p_first per judge
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE critic_labels (
            id INTEGER PRIMARY KEY,
            calibration_id INTEGER NOT NULL REFERENCES critic_calibrations(id),
            stage TEXT NOT NULL,
            task TEXT NOT NULL,
            first_call_id INTEGER NOT NULL,
            second_call_id INTEGER NOT NULL,
            first_sample INTEGER NOT NULL,
            second_sample INTEGER NOT NULL,
            p_first TEXT NOT NULL,  -- JSON: per judge
            score_first REAL NOT NULL,
            score_second REAL NOT NULL,
            label TEXT CHECK (label IN ('first', 'second'))
        )
        """
    )
    db.execute("CREATE INDEX critic_labels_calibration ON critic_labels(calibration_id)")
