"""Migrations are history: each holds the SQL it ran, written out, so a database's schema
does not move when a feature module changes; the store imports nothing of Forge but config
and errors; and a database made by the last release migrates to the schema a fresh one gets,
keeping its rows."""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.campaign.store import triples
from appliance.cli import cli
from appliance.serving.calllog import calls
from appliance.store import connect, migrations, open_db
from appliance.store.migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "appliance" / "store"
# sqlite_master (type, name, tbl_name, sql in rowid order) of a fresh database migrated by
# the code at commit 380e71a, whose m005–m011 still imported SCHEMA constants from the
# feature modules. Written once, just before those migrations were rewritten with their SQL
# spelled out: the schema they must keep producing, byte for byte.
EXPECTED_SCHEMA = Path(__file__).parent / "data" / "schema-380e71a.json"
# Made by the last release, e0ce053 (m001–m012): how, in tests/data/old-db/README.md.
OLD_DB = ROOT / "tests" / "data" / "old-db" / "forge-e0ce053.db"
# sha256 (first 16 hex digits) of the source of each shipped migration and of the helper it
# runs: a migration that has shipped is history and is never edited (its SQL, whitespace
# and comments included, is what SQLite keeps); change the schema with a new migration.
FROZEN = {
    "m001_packages": "6d9b42b6ff77b1bc",
    "m002_harness": "277f49d48b95a16e",
    "m003_model_calls": "02db196c721b9b45",
    # m004 was split into two helpers (no function over 80 lines); the SQL it executes,
    # in the same order, is unchanged (the fresh-database schema test proves it byte for byte).
    "m004_index": "c509e0c69e635829",
    "_m004_files": "8c3204dced1acdd5",
    "_m004_symbols_and_chunks": "ca30d32f0fda4de1",
    "m005_campaigns": "076ce9a7d6eecb3f",
    "m006_datasets": "53fabaf06372ee7e",
    "m007_adapters": "05fcf1cc0c9a4eea",
    "m008_registry": "e8565cbb94b210c8",
    "_m008_backfill_split": "54b2c89407ab9efc",
    "m009_evaluation": "fa8929a266d97475",
    "m010_jobs": "af4628e2ff874539",
    "m011_job_results": "320d8f2ec0a7fa2e",
    "m012_tampered_verdict": "a9beee5543c568da",
    "m013_requirement_sets": "bcfca5e85106d68d",
    "m014_answers_in_the_call_log": "b4df456c3be0b0f3",
    "m015_dataset_holdout": "f0e1d72faec5dbc0",
    "m016_insufficient_verdict": "63accf6acb4074a7",
    "m017_call_source": "c521ac104d20149b",
    "m018_solve_runs": "5cd9f5296cff5e35",
    "m019_alerts": "a906a428e34bfb60",
    "m020_data_packages": "8839940ae1ef5963",
}
SHIPPED = [name for name in FROZEN if name.startswith("m")]
FORGE_PACKAGES = ("appliance", "daemon", "tui", "bench")
STORE_MAY_IMPORT = ("appliance.config", "appliance.errors", "appliance.store")


def _schema(db) -> list[list]:
    return [
        list(row)
        for row in db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"
        ).fetchall()
    ]


# m016 (after the fixture) rebuilds gate_decisions to allow the verdict 'insufficient': its row
# moves to the end of sqlite_master with the SQL below (RENAME quotes the name).
M016_GATE_DECISIONS = [
    "table",
    "gate_decisions",
    "gate_decisions",
    'CREATE TABLE "gate_decisions" (\n'
    "            id INTEGER PRIMARY KEY,\n"
    "            stage TEXT NOT NULL,\n"
    "            candidate TEXT NOT NULL,  -- scope-v3\n"
    "            baseline TEXT NOT NULL,  -- scope-v2, or 'base'\n"
    "            candidate_run INTEGER REFERENCES eval_runs(id),\n"
    "            baseline_run INTEGER REFERENCES eval_runs(id),\n"
    "            verdict TEXT NOT NULL CHECK (verdict IN ('promote', 'reject', 'insufficient')),\n"
    "            report TEXT NOT NULL,  -- JSON: the gate's decision, metrics, the example source\n"
    "            created_at TEXT NOT NULL\n"
    "        )",
]


def test_a_fresh_database_gets_the_schema_of_before_the_rewrite_byte_for_byte(tmp_path):
    # The fixture is the schema m001–m014 make; later migrations change it on purpose (the
    # old-release test below checks they take an old database to the fresh schema).
    db = connect(tmp_path / "fresh.db", migrate=False)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for fn in MIGRATIONS[: SHIPPED.index("m014_answers_in_the_call_log") + 1]:
        fn(db)
    expected = json.loads(EXPECTED_SCHEMA.read_text())
    assert len(expected) == 65
    assert _schema(db) == expected


def test_m016_keeps_the_decisions_and_allows_insufficient(forge_home):
    shutil.copyfile(OLD_DB, forge_home.db_path)
    old = connect(forge_home.db_path, migrate=False)
    old.execute(
        "INSERT INTO gate_decisions (stage, candidate, baseline, verdict, report, created_at) "
        "VALUES ('scope', 'scope-v1', 'base', 'promote', '{}', 'then')"
    )
    old.close()
    db = open_db(forge_home)
    assert db.execute("SELECT id, verdict FROM gate_decisions").fetchall() == [(1, "promote")]
    assert [r for r in _schema(db) if r[1] == "gate_decisions"] == [M016_GATE_DECISIONS]
    db.execute(
        "INSERT INTO gate_decisions (stage, candidate, baseline, verdict, report, created_at) "
        "VALUES ('scope', 'scope-v2', 'base', 'insufficient', '{}', 'now')"
    )
    with pytest.raises(Exception, match="CHECK constraint failed"):
        db.execute(
            "INSERT INTO gate_decisions (stage, candidate, baseline, verdict, report, "
            "created_at) VALUES ('scope', 'scope-v3', 'base', 'maybe', '{}', 'now')"
        )
    db.close()


def test_a_shipped_migration_is_never_edited():
    assert [fn.__name__ for fn in MIGRATIONS][: len(SHIPPED)] == SHIPPED
    edited = [
        name
        for name, digest in FROZEN.items()
        if hashlib.sha256(inspect.getsource(getattr(migrations, name)).encode()).hexdigest()[:16]
        != digest
    ]
    assert edited == [], "add a new migration instead of editing one that has shipped"


def _imported_modules(source: str, module_name: str) -> list[tuple[int, str]]:
    """(line, module) for every import in `source`, at any depth (inside functions too),
    relative imports resolved from `module_name` (a package's is NAME.__init__);
    `from X import name` also counts X.name, which is a module when `name` is one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module_name.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            found.append((node.lineno, "__import__()"))  # a hidden edge: refuse it outright
    return found


def _forbidden(source: str, module_name: str) -> list[str]:
    """The imports of Forge modules that the store may not make."""
    bad = []
    for line, module in _imported_modules(source, module_name):
        if module in ("importlib", "__import__()") or module.startswith("importlib."):
            bad.append(f"{line}: {module}")
            continue
        if module.split(".")[0] not in FORGE_PACKAGES:
            continue
        if any(module == ok or module.startswith(f"{ok}.") for ok in STORE_MAY_IMPORT):
            continue
        bad.append(f"{line}: {module}")
    return bad


def test_the_checker_catches_feature_imports_at_any_depth():
    source = (
        "from appliance.errors import StoreError\n"
        "from appliance.store.db import connect\n"
        "def m005(db):\n"
        "    from appliance.campaign.store import SCHEMA\n"
        "    from ..registry import split\n"
        "    import appliance.ops.jobs\n"
        "    from appliance import datasets\n"
    )
    assert _forbidden(source, "appliance.store.migrations") == [
        "4: appliance.campaign.store",
        "4: appliance.campaign.store.SCHEMA",
        "5: appliance.registry",
        "5: appliance.registry.split",
        "6: appliance.ops.jobs",
        "7: appliance",
        "7: appliance.datasets",
    ]


def test_the_store_imports_nothing_of_forge_but_config_and_errors():
    files = sorted(STORE.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "db.py", "migrations.py", "backup.py"}
    bad = {
        f.name: found
        for f in files
        if (found := _forbidden(f.read_text(), f"appliance.store.{f.stem}"))
    }
    assert bad == {}


def test_the_migrations_import_only_the_standard_library_and_sqlite_utils():
    # Nothing a migration runs may change after it shipped: not a feature module, not the
    # config (a default read from it at run time would rewrite history too).
    source = (STORE / "migrations.py").read_text()
    imported = _imported_modules(source, "appliance.store.migrations")
    tops = {module.split(".")[0] for _, module in imported}
    assert tops - set(sys.stdlib_module_names) == {"sqlite_utils"}


def _rows(db, table: str, columns: list[str]) -> list[tuple]:
    names = ", ".join(f'"{c}"' for c in columns)
    return sorted(db.execute(f'SELECT {names} FROM "{table}"').fetchall(), key=repr)


def _tables(db) -> dict[str, list[str]]:
    """Each ordinary table (virtual tables' own shadow tables included) -> its columns."""
    names = [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
        ).fetchall()
    ]
    return {t: [c[1] for c in db.execute(f'PRAGMA table_info("{t}")').fetchall()] for t in names}


def test_a_database_made_by_the_last_release_migrates_and_keeps_its_rows(forge_home, tmp_path):
    shutil.copyfile(OLD_DB, forge_home.db_path)
    old = connect(forge_home.db_path, migrate=False)
    tables = _tables(old)
    before = {t: _rows(old, t, columns) for t, columns in tables.items()}
    old.close()
    assert len(before["packages"]) == 1 and len(before["commits"]) == 35
    assert len(before["ingest_events"]) == 2
    assert [r[0] for r in before["_migrations"]] == SHIPPED[:12]

    db = open_db(forge_home)
    applied = db.execute("SELECT name FROM _migrations ORDER BY rowid").fetchall()
    assert [r[0] for r in applied] == [fn.__name__ for fn in MIGRATIONS]
    fresh = connect(tmp_path / "fresh.db")
    assert sorted(_schema(db), key=lambda r: (r[0], r[1])) == sorted(
        _schema(fresh), key=lambda r: (r[0], r[1])
    )
    for table, columns in tables.items():
        after = _rows(db, table, columns)
        if table == "_migrations":
            assert set(before[table]) < set(after)
        else:
            assert after == before[table], table
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    # m013: the one pinned set becomes the package's only set, used by every commit.
    (requirements, sets) = db.execute(
        "SELECT requirements, requirement_sets FROM packages"
    ).fetchone()
    assert json.loads(sets) == [json.loads(requirements)] and json.loads(requirements)
    assert db.execute("SELECT DISTINCT requirement_set FROM commits").fetchall() == [(0,)]
    db.close()

    # Today's commands read it.
    result = CliRunner().invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.output)["corpus"]["items"]
    assert (item["name"], item["version"], item["split"], item["commits"]) == (
        "demo",
        "1.0.0",
        "train",
        35,
    )


def _old_triple(db, sample: int, stages: dict) -> None:
    db.execute(
        "INSERT INTO triples (package_id, sha, sample, snapshot_sha, temperature, seed, stages, "
        "call_ids, edits, diff, outcome, reason, grading, alignment, seconds, created_at) "
        "VALUES (1, 'abc', ?, 'p', 0.2, 7, ?, '[]', '[]', '', 'failed', 'r', '{}', '{}', '{}', "
        "'then')",
        [sample, json.dumps(stages)],
    )


def test_m014_leaves_each_answer_in_the_call_log_only(forge_home):
    """A triple of the last release copied each stage's answer ("raw") beside its call id;
    m014 drops the copy where the call log holds that answer, and only there."""
    shutil.copyfile(OLD_DB, forge_home.db_path)
    old = connect(forge_home.db_path, migrate=False)
    for call_id, output in ((1, '{"files": ["a.py"]}'), (2, '{"summary": "é"}')):
        old.execute(
            "INSERT INTO model_calls (id, at, kind, role, base, base_sha256, prompt, params, "
            "output, finish_reason, prompt_tokens, completion_tokens, duration_s) "
            "VALUES (?, 'then', 'chat', 'coder', 'b', 'h', 'p', '{}', ?, 'stop', 1, 1, 0.1)",
            [call_id, output],
        )
    context = {
        "stage": "scope",
        "sha": "p",
        "budget": 9,
        "tokens": 1,
        "left_out": 0,
        "items": [{"kind": "tree", "path": "", "why": "w", "tokens": 1, "text": "t"}],
    }

    def stage(name, raw, call_id):
        return {"stage": name, "output": None, "raw": raw, "call_id": call_id, "adapter": None,
                "error": "unusable answer: x", "context": context}  # fmt: skip

    _old_triple(
        old,
        0,
        {
            "scope": stage("scope", '{"files": ["a.py"]}', 1),
            "task_analysis": stage("task_analysis", '{"summary": "é"}', 2),
        },
    )
    # Not logged, or logged with another output: the copy is the only one, it stays.
    unlogged = {"scope": stage("scope", "lost", None), "plan": stage("plan", "other", 1)}
    _old_triple(old, 1, unlogged)
    old.conn.commit()
    old.close()

    db = open_db(forge_home)
    (first,), (second,) = db.execute("SELECT stages FROM triples ORDER BY sample").fetchall()
    moved = {
        name: stage(name, "", call_id) for name, call_id in (("scope", 1), ("task_analysis", 2))
    }
    for entry in moved.values():
        del entry["raw"]
    assert first == json.dumps(moved)  # byte for byte, less the copies
    assert second == json.dumps(unlogged)
    # The campaign's records read both shapes; the answer comes from the call log.
    (migrated, kept) = triples(db, 1)
    assert [s.call_id for s in migrated.stages] == [1, 2]
    assert calls(db, migrated.call_ids)[2].output == '{"summary": "é"}'
    assert [s.stage for s in kept.stages] == ["scope", "plan"] and kept.call_ids == [1]
