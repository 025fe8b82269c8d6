"""Backups and the restore drill, on a real FORGE_HOME with the demo package ingested."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.errors import ForgeError
from appliance.store import connect
from appliance.store.backup import RestoreRefused, backups, keep, make_backup, prune, restore
from tests.harness.conftest import DEMO, ingest_package, make_home

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch):
    config, db = make_home(tmp_path / "home", monkeypatch)
    ingest_package(config, db, DEMO)
    return config, db


def packages(config) -> int:
    db = connect(config.db_path)
    try:
        return db.execute("SELECT COUNT(*) FROM packages").fetchone()[0]
    finally:
        db.conn.close()


def test_restore_drill_brings_back_what_was_lost(home):
    config, db = home
    made = make_backup(config)
    assert made.path.parent == config.dir("backups") and packages(config) == 1
    original = db.execute("SELECT description FROM packages").fetchone()[0]
    db.execute("UPDATE packages SET description = 'damaged'")  # the loss
    db.execute("DELETE FROM commits WHERE id > 10")
    restored, previous = restore(config, made.path)
    check = connect(config.db_path)
    assert check.execute("SELECT description FROM packages").fetchone()[0] == original
    assert check.execute("SELECT COUNT(*) FROM commits").fetchone()[0] == 35
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.conn.close()
    # The database the restore replaced is kept, as it was.
    assert previous.path.name.endswith("-pre-restore.db")
    kept = connect(previous.path, migrate=False)
    assert kept.execute("SELECT description FROM packages").fetchone()[0] == "damaged"
    assert kept.execute("SELECT COUNT(*) FROM commits").fetchone()[0] == 10


def test_a_backup_is_online_and_holds_only_what_was_committed(home):
    config, _ = home
    writer = connect(config.db_path)
    writer.conn.execute("BEGIN IMMEDIATE")
    writer.conn.execute("UPDATE packages SET description = 'uncommitted'")
    made = make_backup(config)  # while another connection holds the write lock
    writer.conn.execute("ROLLBACK")
    assert sorted(config.dir("backups").iterdir()) == [made.path]  # no partial, no -wal/-shm
    copy = connect(made.path, migrate=False)
    assert copy.execute("SELECT description FROM packages").fetchone()[0] != "uncommitted"


@pytest.mark.parametrize("content, words", [
    (b"not a database at all" * 10, "not an SQLite database"),
    (None, "not a Forge database"),
])  # fmt: skip
def test_a_bad_file_is_refused_and_changes_nothing(home, tmp_path, content, words):
    config, _ = home
    bad = tmp_path / "bad.db"
    if content is None:  # a sound SQLite file of something else
        other = connect(bad, migrate=False)
        other.execute("CREATE TABLE notes (text TEXT)")
        other.conn.close()
    else:
        bad.write_bytes(content)
    before = sorted(p.name for p in config.dir("backups").iterdir())
    with pytest.raises(RestoreRefused) as caught:
        restore(config, bad)
    assert words in caught.value.message
    assert packages(config) == 1
    assert sorted(p.name for p in config.dir("backups").iterdir()) == before


def test_restore_is_refused_while_the_daemon_runs(home):
    import os

    config, _ = home
    made = make_backup(config)
    (config.home / "forged.pid").write_text(str(os.getpid()))  # a live process
    with pytest.raises(RestoreRefused, match="forged is running"):
        restore(config, made.path)
    (config.home / "forged.pid").write_text("999999999")  # a stale pid file
    restore(config, made.path)


def test_retention_keeps_7_daily_and_4_weekly(tmp_path):
    from appliance.store.backup import Backup

    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    found = [Backup(tmp_path / f"b{i}", now - timedelta(hours=12 * i), 1) for i in range(120)]
    kept = [b for b in found if b.path in keep(found, now)]
    days = {b.at.date() for b in kept if now - b.at < timedelta(days=7)}
    assert len(days) == 7
    for day in days:  # the newest of each day
        newest = max(b.at for b in found if b.at.date() == day)
        assert any(b.at == newest for b in kept)
    weeks = {tuple(b.at.isocalendar())[:2] for b in kept}
    assert len(weeks) <= 5 and all(now - b.at < timedelta(weeks=4) for b in kept)
    assert len(kept) <= 7 + 4


def test_prune_deletes_only_what_retention_drops(home):
    config, _ = home
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    for days in (0, 1, 40):
        make_backup(config, now=now - timedelta(days=days))
    stray = config.dir("backups") / "operator-notes.txt"
    stray.write_text("keep me")
    removed = prune(config, now=now)
    assert [re.sub(r"-[0-9a-f]{8}\.db$", "", p.name) for p in removed] == [
        "forge-20261022T120000.000000Z"
    ]
    assert len(backups(config)) == 2 and stray.exists()


def test_old_names_are_still_backups(home):
    """forge-20261022T120000Z.db (one per second, before names got a random part) is still
    listed, pruned by the same rules, and restorable."""
    config, _ = home
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    made = make_backup(config, now=now)
    folder = config.dir("backups")
    old_day, old_week = folder / "forge-20261130T080000Z.db", folder / "forge-20261001T080000Z.db"
    pre = folder / "forge-20261130T090000Z-pre-restore.db"
    for path in (old_day, old_week, pre):
        shutil.copyfile(made.path, path)
    found = {b.path.name: b.at for b in backups(config)}
    assert found[old_day.name] == datetime(2026, 11, 30, 8, tzinfo=UTC) and pre.name in found
    assert found[made.path.name] == now
    assert prune(config, now=now) == [old_week]
    restore(config, old_day)
    assert packages(config) == 1


CONCURRENT = 6


def test_concurrent_backups_all_succeed_with_their_own_files(home):
    """Six `forge backup` processes at once: each exits 0 with its own file, and backups/
    holds those files and nothing else (no partial, no -wal/-shm/-journal)."""
    config, _ = home
    env = os.environ | {"FORGE_HOME": str(config.home)}
    env.pop("FORGE_CONFIG", None)
    command = [sys.executable, "-m", "appliance", "backup", "--json"]
    procs = [
        subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(CONCURRENT)
    ]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in outs] == [0] * CONCURRENT, outs
    paths = {json.loads(out)["path"] for _, out, _ in outs}
    assert len(paths) == CONCURRENT
    assert sorted(str(p) for p in config.dir("backups").iterdir()) == sorted(paths)
    assert {str(b.path) for b in backups(config)} == paths


def test_backups_at_the_same_instant_do_not_collide(home):
    """Threads given the very same time: before, they shared one name (and one partial)."""
    config, _ = home
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: make_backup(config, now=now), range(4)))
    assert len({b.path for b in made}) == 4 and all(b.at == now for b in made)
    assert sorted(config.dir("backups").iterdir()) == sorted(b.path for b in made)


def test_a_failed_backup_leaves_nothing_behind(home):
    """A backup refused after it was copied (here the database is sound SQLite in WAL mode
    but not Forge's) removes its partial and the partial's side files."""
    config, db = home
    db.conn.close()
    for extra in ("", "-wal", "-shm"):
        Path(f"{config.db_path}{extra}").unlink(missing_ok=True)
    other = connect(config.db_path, migrate=False)  # WAL, like Forge's own
    other.execute("CREATE TABLE notes (text TEXT)")
    other.conn.close()
    with pytest.raises(ForgeError, match="came out unusable"):
        make_backup(config)
    assert list(config.dir("backups").iterdir()) == []


def test_cli_backup_list_and_restore(home):
    config, _ = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    made = runner.invoke(cli, ["backup", "--json"])
    assert made.exit_code == 0, made.output
    path = json.loads(made.output)["path"]
    listed = runner.invoke(cli, ["backup", "--list", "--json"])
    assert path in [b["path"] for b in json.loads(listed.output)]
    out = runner.invoke(cli, ["restore", path, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["previous"]["path"].endswith("-pre-restore.db")
    missing = runner.invoke(cli, ["restore", str(config.home / "nope.db")])
    assert missing.exit_code == 2 and "is not a file" in missing.output
