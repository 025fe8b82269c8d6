"""The corpus (`appliance.packages.corpus`): what it hands out is frozen, and it finds
packages as operators name them. (tests/store/test_table_owners.py keeps it the only
code whose SQL names its tables.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from appliance.errors import UsageError
from appliance.harness.results import GoldCounts, gold_counts
from appliance.packages import corpus
from appliance.store import connect

ROOT = Path(__file__).resolve().parents[2]


def _add(db, name: str, version: str, at: str, **extra) -> int:
    columns = {
        "name": name,
        "version": version,
        "manifest_sha256": f"{name}@{version}",
        "path": f"corpus/{name}@{version}",
        "split": "train",
        "test_command": '["pytest"]',
        "test_timeout_s": 60,
        "requirements": '["a==1"]',
        "ingested_at": at,
    } | extra
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    sql = f"INSERT INTO packages ({names}) VALUES ({marks})"
    return db.execute(sql, list(columns.values())).lastrowid


@pytest.fixture
def db(tmp_path):
    database = connect(tmp_path / "forge.db")
    yield database
    database.close()


def test_find_package_by_name_exact_version_or_the_older_spelling(db):
    _add(db, "calc", "1.0", "2026-01-01T00:00:00+00:00")
    newest = _add(db, "calc", "2.0", "2026-02-01T00:00:00+00:00")
    assert corpus.find_package(db, "calc").id == newest
    assert corpus.find_package(db, "calc@1.0").version == "1.0"
    found = corpus.find_package(db, "calc-1.0")
    assert found.label == "calc-1.0" and found.test_command == ("pytest",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.split = "eval"  # type: ignore[misc]
    with pytest.raises(UsageError, match="no package named 'nosuch'") as raised:
        corpus.find_package(db, "nosuch")
    assert "known packages: calc" in raised.value.hint


def test_a_row_without_requirement_sets_has_its_requirements_as_the_one_set(db):
    _add(db, "old", "1", "2026-01-01T00:00:00+00:00", requirement_sets="[]")
    _add(db, "new", "1", "2026-01-01T00:00:00+00:00", requirement_sets='[["b==2"], ["c==3"]]')
    by_name = {p.name: p for p in corpus.packages(db)}
    assert by_name["old"].requirement_sets == (("a==1",),)
    assert by_name["new"].requirement_sets == (("b==2",), ("c==3",))


def test_names_counts_and_events(db):
    calc = _add(db, "calc", "1.0", "2026-01-01T00:00:00+00:00")
    _add(db, "held", "1.0", "2026-01-01T00:00:00+00:00", split="eval")
    corpus.add_commits(
        db,
        calc,
        [corpus.NewCommit(f"{i}" * 40, "0" * 40, "Fix it", "", "[]", 1, 0, 0) for i in (1, 2)],
    )
    corpus.add_event(db, "calc", "accepted", package_id=calc)
    corpus.add_event(db, "junk", "rejected", quarantine_path="q/junk", reasons=["bad"])
    assert corpus.names(db) == ["calc", "held"]
    assert corpus.names(db, include_eval=False) == ["calc"]
    assert corpus.commit_counts(db) == {calc: 2}
    assert [c.sha[0] for c in corpus.commits_of(db, calc)] == ["1", "2"]
    assert [(e.source, e.reasons) for e in corpus.events(db, 5)] == [
        ("junk", ("bad",)),
        ("calc", ()),
    ]
    assert gold_counts(db).get(calc, GoldCounts()) == GoldCounts(0, 0, 0)
