"""Every table has one owner: only the owner's SQL (in appliance/, daemon/, tui/) names
it; every other module calls the owner's functions and gets frozen records back.

The tables are read from a freshly migrated database, so a new table without an owner
here fails. The migrations make the tables and are left out. The index's tables belong
to the index service as a whole: its store writes them, its queries and search read them.
Tests and bench/ may read the database on their own, to judge Forge from outside.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.store import connect

ROOT = Path(__file__).resolve().parents[2]
INDEX = {"appliance/index/store.py", "appliance/index/queries.py", "appliance/index/search.py"}
OWNERS: dict[str, set[str]] = {
    "packages": {"appliance/packages/corpus.py"},
    "commits": {"appliance/packages/corpus.py"},
    "ingest_events": {"appliance/packages/corpus.py"},
    "gold_results": {"appliance/harness/results.py"},
    "patch_gradings": {"appliance/harness/results.py"},
    "model_calls": {"appliance/serving/calllog.py"},
    "triples": {"appliance/campaign/store.py"},
    "synthetic_pairs": {"appliance/campaign/store.py"},
    "dataset_rows": {"appliance/datasets/versions.py"},
    "dataset_versions": {"appliance/datasets/versions.py"},
    "adapters": {"appliance/registry/store.py"},
    "adapter_events": {"appliance/registry/store.py"},
    "eval_runs": {"appliance/evaluation/store.py"},
    "eval_examples": {"appliance/evaluation/store.py"},
    "eval_outcomes": {"appliance/evaluation/store.py"},
    "gate_decisions": {"appliance/evaluation/store.py"},
    "jobs": {"appliance/ops/jobs.py"},
    "solve_runs": {"appliance/solve/runs.py"},
    "alerts": {"appliance/ops/alerts.py"},
    "data_packages": {"appliance/datapackages/store.py"},
    "data_package_rows": {"appliance/datapackages/store.py"},
    "critic_calibrations": {"appliance/datasets/critic.py"},
    "critic_labels": {"appliance/datasets/critic.py"},
    "index_snapshots": INDEX,
    "index_blobs": INDEX,
    "index_files": INDEX,
    "index_symbols": INDEX,
    "index_imports": INDEX,
    "index_chunks": INDEX,
    "index_chunk_vectors": INDEX,
    "index_chunk_text": INDEX,
}
# The store's own bookkeeping, and the shadow tables SQLite keeps for virtual tables.
NOT_OWNED = re.compile(r"^(_migrations|index_chunk_text_\w+|index_chunk_vectors_\w+)$")


def _schema_tables(tmp_path: Path) -> set[str]:
    db = connect(tmp_path / "forge.db")
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        db.close()
    return {name for (name,) in rows if not name.startswith("sqlite_")}


def _naming(table: str) -> set[str]:
    sql = re.compile(rf"\b(FROM|JOIN|INTO|UPDATE)\s+{table}\b(?!/)")
    return {
        path.relative_to(ROOT).as_posix()
        for package in ("appliance", "daemon", "tui")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "migrations.py" and sql.search(path.read_text())
    }


def test_every_table_has_an_owner(tmp_path):
    tables = {t for t in _schema_tables(tmp_path) if not NOT_OWNED.match(t)}
    assert tables == set(OWNERS), "a table without an owner here, or an owner of no table"


@pytest.mark.parametrize("table", sorted(OWNERS))
def test_only_the_owner_names_its_table(table):
    assert _naming(table) <= OWNERS[table]
    assert _naming(table), f"no module names {table}: is the owner above right?"
