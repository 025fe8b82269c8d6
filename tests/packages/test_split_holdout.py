"""The time-cut hold-out on the real demo package: the newest commits of a package name
are held out, so no commit a campaign or dataset may use is newer than a held-out one."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from appliance.campaign.run import plan_units
from appliance.packages import corpus
from appliance.packages.split import Holdout, history
from appliance.store import transaction
from tests.harness.conftest import DEMO, ingest_package, make_home


@pytest.fixture
def home(tmp_path, monkeypatch):
    config, db = make_home(tmp_path / "home", monkeypatch, "[harness]\ngold_runs = 1\n")
    ingest_package(config, db, DEMO)
    yield config, db
    db.close()


def _dates() -> dict[str, datetime]:
    commits = json.loads((DEMO / "manifest.json").read_text())["commits"]
    return {c["sha"]: datetime.fromisoformat(c["author_date"]) for c in commits}


def test_the_demo_holds_out_exactly_its_newest_seven_commits(home):
    config, db = home
    dates = _dates()
    assert len(dates) == 35
    holdout = Holdout.of(config, db)  # holdout_fraction 0.2 by default: ceil(0.2 × 35) = 7
    newest = sorted(dates, key=dates.get)[-7:]
    held = [sha for sha in dates if holdout.held_out("demo", sha)]
    assert sorted(held) == sorted(newest)
    trainable = [sha for sha in dates if holdout.trainable("demo", "train", sha)]
    assert len(trainable) == 28
    assert max(dates[s] for s in trainable) < min(dates[s] for s in held)
    assert history(db, "demo") == sorted(dates, key=dates.get)
    assert holdout.to_dict() == {"rule": "newest", "fraction": 0.2,
                                 "packages": {"demo": list(newest)}}  # fmt: skip
    # A campaign plans units only from trainable commits, oldest manifest entries first.
    units, _ = plan_units(config, db, "demo", commits=2, samples=1)
    assert units and all(u.sha in trainable for u in units)


def test_a_newer_version_of_the_same_name_moves_the_cut(home):
    config, db = home
    before = Holdout.of(config, db)
    (demo,) = corpus.packages(db)
    shas = [f"{i:040x}" for i in range(1, 4)]
    with transaction(db) as conn:
        package_id = corpus.add_package(
            conn, name="demo", version="2.0", manifest_sha256="m2", path="corpus/demo@2.0",
            split="train", description="", license="", python="3.11", test_command=["pytest"],
            test_timeout_s=60, requirements=[], requirement_sets=[[]],
        )  # fmt: skip
        again = corpus.commits_of(conn, demo.id)[:2]  # listed again: one commit each
        newer = [
            corpus.NewCommit(sha, again[-1].sha, f"newer {sha}", f"2025-01-0{i}T10:00:00+00:00",
                             "[]", 1, 0, 0)
            for i, sha in enumerate(shas, 1)
        ]  # fmt: skip
        repeated = [
            corpus.NewCommit(c.sha, c.parent, c.message, c.author_date, "[]", 1, 0, 0)
            for c in again
        ]
        corpus.add_commits(conn, package_id, repeated + newer)
    after = Holdout.of(config, db)
    assert len(history(db, "demo")) == 38
    held = dict(after.packages)["demo"]
    assert len(held) == 8  # ceil(0.2 × 38)
    assert set(shas) <= set(held)  # the newer commits are held out now...
    assert set(held) - set(shas) < set(dict(before.packages)["demo"])  # ...and 5 older ones
    moved = set(dict(before.packages)["demo"]) - set(held)
    assert len(moved) == 2 and all(after.trainable("demo", "train", s) for s in moved)
    assert after.digest != before.digest
