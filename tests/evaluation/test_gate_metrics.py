"""Metrics taken per task: a task's items are averaged before any task is compared, and
two stored runs are paired task by task."""

from __future__ import annotations

import pytest

from appliance.config import EvaluationSettings
from appliance.evaluation import store
from appliance.evaluation.compare import compare_runs
from appliance.evaluation.metrics import METRICS, Outcome, per_task, summarise
from appliance.evaluation.run import EvalRun
from appliance.evaluation.store import StoredOutcome


def outcomes() -> list[StoredOutcome]:
    # Task a: 4 files, 1 right; task b: 1 file, right. Per item 2/5, per task (0.25 + 1) / 2.
    rows = [("pkg@a", f"f{i}.py", "accuracy", float(i == 0)) for i in range(4)]
    rows += [("pkg@b", "g.py", "accuracy", 1.0), ("pkg@a", "f0.py", "relevant_recall", 0.0)]
    return [StoredOutcome(*row) for row in rows]


def test_per_task_is_the_mean_of_each_tasks_items():
    tasks = per_task("scope", outcomes())
    assert tasks["accuracy"] == {"pkg@a": 0.25, "pkg@b": 1.0}
    assert tasks["relevant_recall"] == {"pkg@a": 0.0}


def test_summary_is_the_mean_over_tasks_and_counts_tasks_and_items():
    summary = summarise("scope", outcomes())
    assert summary["accuracy"] == {"value": pytest.approx(0.625), "n": 2, "items": 5}
    assert summary["relevant_recall"] == {"value": 0.0, "n": 1, "items": 1}


def test_only_resolved_is_binary():
    kinds = {(stage, metric): kind for stage, ms in METRICS.items() for metric, kind in ms}
    assert {key for key, kind in kinds.items() if kind == "binary"} == {
        ("plan", "resolved"),
        ("code", "resolved"),
    }


def test_the_gate_settings_have_their_defaults():
    settings = EvaluationSettings()
    assert settings.min_tasks == 10 and settings.max_regression == 0.05


def _run(db, stage: str, adapter: str, tasks: dict[str, list[tuple[str, str, float]]]):
    run = store.open_run(db, stage, adapter, f"sha-{adapter}", "base-sha", "key", "test", 0)
    for task, items in tasks.items():
        store.record_example(db, run.id, task, "{}", {}, [Outcome(*item) for item in items])
    return EvalRun(run.id, stage, adapter, "test", {}, False)


def test_compare_runs_pairs_the_runs_task_by_task(db):
    # 12 tasks, each with its own number of files; the candidate gets task i's files right
    # on every task, the active one only the first file. Task "pkg@only-ours" is unpaired.
    ours, theirs = {}, {}
    for i in range(12):
        files = [f"f{j}.py" for j in range(i % 4 + 1)]
        ours[f"pkg@{i:02d}"] = [(f, "accuracy", 1.0) for f in files]
        theirs[f"pkg@{i:02d}"] = [(f, "accuracy", float(j == 0)) for j, f in enumerate(files)]
    ours["pkg@only-ours"] = [("x.py", "accuracy", 0.0)]
    results = compare_runs(db, "scope", _run(db, "scope", "cand", ours),
                           _run(db, "scope", "act", theirs), seed=0, resamples=200)  # fmt: skip
    (accuracy,) = results  # no relevant_recall outcome was stored: no result for it
    assert (accuracy.metric, accuracy.kind, accuracy.n, accuracy.unit) == (
        "accuracy",
        "continuous",
        12,
        "task",
    )
    per_task_active = [1 / (i % 4 + 1) for i in range(12)]
    assert accuracy.candidate == 1.0
    assert accuracy.baseline == pytest.approx(sum(per_task_active) / 12)
    assert accuracy.counts == {"better": 9, "worse": 0, "same": 3}


def test_compare_runs_takes_resolved_as_a_tasks_pass_or_fail(db):
    ours = {f"pkg@{i}": [("", "resolved", float(i < 6))] for i in range(10)}
    theirs = {f"pkg@{i}": [("", "resolved", float(i < 2))] for i in range(10)}
    (resolved,) = compare_runs(db, "code", _run(db, "code", "cand", ours),
                               _run(db, "code", "act", theirs), seed=0, resamples=200)  # fmt: skip
    assert resolved.kind == "binary" and resolved.n == 10
    assert resolved.counts == {"both": 2, "candidate_only": 4, "baseline_only": 0, "neither": 4}
