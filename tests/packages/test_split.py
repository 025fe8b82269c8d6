"""The train/eval split: decided at ingest (hint, earlier versions, a hash of the name),
backfilled by the migration, changed by `forge package split` unless that would put
trained-on data in eval."""

from __future__ import annotations

import json

from click.testing import CliRunner

from appliance.cli import cli
from appliance.packages.ingest import ingest
from appliance.packages.split import hashed_split, no_rows
from appliance.store import connect
from appliance.store.migrations import MIGRATIONS, migrate
from tests.conftest import copy_package


def test_the_hash_rule_is_deterministic_and_takes_about_the_fraction():
    names = [f"repo-{i}" for i in range(4000)]
    first = [hashed_split(n, 0.15) for n in names]
    assert first == [hashed_split(n, 0.15) for n in names]
    assert 0.13 < first.count("eval") / len(names) < 0.17
    assert hashed_split("demo", 0.15) == "train"  # the shipped demo stays a train package
    assert {hashed_split(n, 0.0) for n in names} == {"train"}


def _eval_name(prefix: str) -> str:
    """The first name PREFIX-i that the hash puts in eval."""
    return next(
        f"{prefix}-{i}" for i in range(1000) if hashed_split(f"{prefix}-{i}", 0.15) == "eval"
    )


def _package(db, name: str, version: str, split: str | None) -> None:
    db.execute(
        "INSERT INTO packages (name, version, manifest_sha256, path, split, test_command, "
        "test_timeout_s, requirements, ingested_at) VALUES (?, ?, ?, ?, ?, '[]', 1, '[]', '')",
        [name, version, f"{name}-{version}", f"corpus/{name}-{version}", split],
    )


def test_the_migration_backfills_old_packages_by_the_same_rule(tmp_path):
    db = connect(tmp_path / "old.db", migrate=False)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for fn in MIGRATIONS[: [f.__name__ for f in MIGRATIONS].index("m008_registry")]:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, '')", [fn.__name__])
    held, trained = _eval_name("held"), _eval_name("used")
    _package(db, "demo", "1", None)
    _package(db, held, "1", None)
    _package(db, "calc", "1", "eval")
    _package(db, "calc", "2", None)  # another version: the same side as the first
    _package(db, trained, "1", None)
    db.execute(
        "INSERT INTO dataset_rows (stage, kind, key, task, first_version, row, created_at) "
        "VALUES ('scope', 'sft', 'k', ?, 1, '{}', '')",
        [f"{trained}@abc"],
    )
    assert migrate(db) == ["m008_registry"] + [
        f.__name__ for f in MIGRATIONS if f.__name__ > "m008_registry"
    ]
    splits = db.execute("SELECT name, version, split FROM packages ORDER BY id").fetchall()
    assert splits == [
        ("demo", "1", "train"),
        (held, "1", "eval"),
        ("calc", "1", "eval"),
        ("calc", "2", "eval"),
        (trained, "1", "train"),  # its rows were trained on: never eval
    ]


def test_ingest_stores_the_split_and_forge_package_split_moves_every_version(
    calc_package, forge_home, db
):
    copy_package(calc_package, forge_home.dir("ingest") / "calc")
    second = copy_package(calc_package, forge_home.dir("ingest") / "calc-2")
    manifest = json.loads((second / "manifest.json").read_text())
    (second / "manifest.json").write_text(
        json.dumps(manifest | {"version": "2.0", "split": "eval"})
    )
    assert [r.outcome for r in ingest(forge_home, db, trained_rows=no_rows)] == [
        "accepted",
        "accepted",
    ]
    rows = db.execute("SELECT version, split FROM packages ORDER BY id").fetchall()
    assert rows == [("1.0", hashed_split("calc", 0.15)), ("2.0", "train")]
    (reasons,) = db.execute("SELECT reasons FROM ingest_events ORDER BY id DESC").fetchone()
    assert "split hint 'eval' was not followed" in json.loads(reasons)[0]

    runner = CliRunner()
    out = runner.invoke(cli, ["package", "split", "calc", "eval", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == {
        "name": "calc",
        "split": "eval",
        "before": {"1.0": "train", "2.0": "train"},
    }
    assert {r[0] for r in db.execute("SELECT split FROM packages")} == {"eval"}
    out = runner.invoke(cli, ["package", "split", "calc-1.0", "train"])
    assert out.exit_code == 0 and "calc 1.0: eval → train" in out.output
    # Once datasets hold rows made from it, it can never become eval.
    (sha,) = db.execute("SELECT sha FROM commits LIMIT 1").fetchone()
    db.execute(
        "INSERT INTO dataset_rows (stage, kind, key, task, first_version, row, created_at) "
        "VALUES ('scope', 'sft', 'k1', ?, 1, '{}', '')",
        [f"calc@{sha}"],
    )
    out = runner.invoke(cli, ["package", "split", "calc", "eval"])
    assert out.exit_code == 1
    assert "eval packages must never have been trained on" in out.output
    assert "--split eval" in out.output  # what to do instead
    assert {r[0] for r in db.execute("SELECT split FROM packages")} == {"train"}
    out = runner.invoke(cli, ["package", "split", "nosuch", "eval"])
    assert out.exit_code == 2 and "no package named 'nosuch'" in out.output
