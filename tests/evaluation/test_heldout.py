"""The evaluation set of a corpus without eval packages: the held-out commits of the real
demo package (the newest ones), gold-graded in the real sandbox."""

from __future__ import annotations

import pytest

from appliance.evaluation import heldout
from appliance.packages.split import Holdout, history
from tests.harness.conftest import DEMO, ingest_package, make_home

SETTINGS = "[harness]\ngold_runs = 1\n[evaluation]\nmax_examples = 50\nholdout_fraction = 0.1\n"


@pytest.fixture
def home(tmp_path, monkeypatch):
    config, db = make_home(tmp_path / "home", monkeypatch, SETTINGS)
    ingest_package(config, db, DEMO)
    yield config, db
    db.close()


def test_the_evaluation_set_is_the_newest_commits_and_says_so(home):
    config, db = home
    evaluation = heldout.evaluation_set(config, db)
    newest = history(db, "demo")[-4:]  # ceil(0.1 × 35)
    assert evaluation.source == heldout.HELD_OUT_COMMITS
    assert {spec.sha for spec in evaluation.commits} <= set(newest)
    assert len(evaluation.commits) >= 3  # of the 4, those with a usable gold run (3 here)
    assert "the newest 4 commits of each train package" in evaluation.note
    assert "holdout_fraction 0.1" in evaluation.note
    assert all(Holdout.of(config, db).held_out("demo", s.sha) for s in evaluation.commits)
