"""Operator rows against the hold-out, on the real demo package, without running a model:
a solve run is written through the runs store with its calls in the real call log, and
the real dataset builder decides. Rows of a run whose snapshot comes to contain a
held-out commit are dropped from the next version, which says why."""

from __future__ import annotations

import json

import pytest

from appliance.campaign.store import StageRecord
from appliance.config import load_config
from appliance.datasets.versions import build, rows_of, versions
from appliance.packages import corpus
from appliance.packages.split import history
from appliance.serving.calllog import CallLog, ModelCall
from appliance.solve import runs
from appliance.solve.runs import SolveRun
from tests.harness.conftest import DEMO, ingest_package, make_home

SETTINGS = "[ingest]\nquiet_seconds = 0\n[evaluation]\nholdout_fraction = {fraction}\n"
ANSWER = '{"summary": "s", "kind": "feature", "files": ["src/metrica/parser.py"]}'


@pytest.fixture
def home(tmp_path, monkeypatch):
    config, db = make_home(tmp_path / "home", monkeypatch, "[evaluation]\nholdout_fraction = 0.2\n")
    ingest_package(config, db, DEMO)
    yield config, db
    db.close()


def _good_run(config, db, snapshot: str, contains: tuple[str, ...]) -> SolveRun:
    (package,) = corpus.packages(db)
    messages = [{"role": "user", "content": "task"}]
    call = ModelCall("chat", "reasoning", "base", "0" * 64, None, f"prompt at {snapshot}",
                     {"temperature": 0.0}, messages, ANSWER, "stop")  # fmt: skip
    stage = StageRecord("task_analysis", json.loads(ANSWER), CallLog(config.db_path)(call), None,
                        None, {"sha": snapshot, "items": []})  # fmt: skip
    run = runs.record_run(db, SolveRun(
        package.id, package.label, None, snapshot, contains, "Fix the parser", (stage,), (),
        "diff --git a/x b/x\n", "diff", "given", {}, "then", "then",
    ))  # fmt: skip
    return runs.record_feedback(db, run.id, "good", None, None)


def test_operator_rows_are_taken_then_dropped_once_their_snapshot_is_held_out(home):
    config, db = home
    shas = history(db, "demo")
    snapshot = shas[20]  # the 7 newest of 35 are held out at 0.2: this one is not
    run = _good_run(config, db, snapshot, tuple(shas[:21]))
    first = build(config, db, "task_analysis", "sft")
    (row,) = rows_of(db, "task_analysis", "sft", first.version)
    assert row.provenance.origin == "operator" and row.provenance.sample == run.id
    assert row.completion == ANSWER and row.source == "operator: good run"
    assert row.task == runs.task_key("demo", snapshot, "Fix the parser")
    assert first.held_back == []
    (config.home / "forge.toml").write_text(SETTINGS.format(fraction=0.5))
    config = load_config()
    second = build(config, db, "task_analysis", "sft")
    assert second.dropped_rows == 1 and rows_of(db, "task_analysis", "sft", second.version) == []
    (held,) = second.held_back
    assert held["run"] == run.id and "held out for evaluation" in held["reason"]
    # Nothing changes again: the latest version stays current.
    assert build(config, db, "task_analysis", "sft") is None
    assert [v.version for v in versions(db, "task_analysis") if v.kind == "sft"] == [1, 2]
