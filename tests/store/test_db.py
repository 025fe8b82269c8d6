"""The database: one opener, WAL, foreign keys, sqlite-vec, migrations applied once."""

from __future__ import annotations

import pytest

from appliance.store import connect, transaction
from appliance.store.migrations import MIGRATIONS, migrate


def test_open_sets_wal_foreign_keys_and_loads_sqlite_vec(tmp_path):
    db = connect(tmp_path / "f.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert db.execute("SELECT vec_version()").fetchone()[0].startswith("v")
    db.execute("CREATE VIRTUAL TABLE v USING vec0(e float[3])")
    db.execute("INSERT INTO v(rowid, e) VALUES (1, '[1, 0, 0]'), (2, '[0, 1, 0]')")
    nearest = db.execute("SELECT rowid FROM v WHERE e MATCH '[0.9, 0.1, 0]' AND k = 1").fetchone()[
        0
    ]
    assert nearest == 1


def test_migrations_apply_once_and_are_recorded(tmp_path):
    db = connect(tmp_path / "f.db", migrate=False)
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    again = connect(tmp_path / "f.db")  # a second process opening the same file
    names = [r["name"] for r in again["_migrations"].rows]
    assert names == [m.__name__ for m in MIGRATIONS]
    assert {"packages", "commits", "ingest_events"} <= set(again.table_names())


def test_failed_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    from appliance.store import migrations

    def m999_broken(db):
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, m999_broken])
    db = connect(tmp_path / "f.db", migrate=False)
    with pytest.raises(RuntimeError):
        migrations.migrate(db)
    assert "half" not in db.table_names()
    assert "m999_broken" not in migrations.applied(db)
    assert "m001_packages" in migrations.applied(db)


def test_transaction_rolls_back_on_error(tmp_path):
    db = connect(tmp_path / "f.db")
    with pytest.raises(ValueError), transaction(db) as conn:
        conn.execute(
            "INSERT INTO ingest_events (at, source, outcome) VALUES ('t', 's', 'rejected')"
        )
        raise ValueError("boom")
    assert db.execute("SELECT COUNT(*) FROM ingest_events").fetchone()[0] == 0


def test_foreign_keys_are_enforced(tmp_path):
    from appliance.store.db import sqlite_module

    db = connect(tmp_path / "f.db")
    with pytest.raises(sqlite_module().IntegrityError):
        db.execute(
            "INSERT INTO commits (package_id, sha, parent, message, files, lines_added,"
            " lines_deleted) VALUES (42, 'a', 'b', 'm', '[]', 0, 0)"
        )
