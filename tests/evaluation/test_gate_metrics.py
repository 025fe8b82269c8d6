"""Metrics taken per task: a task's items are averaged before any task is compared."""

from __future__ import annotations

import pytest

from appliance.config import EvaluationSettings
from appliance.evaluation.metrics import METRICS, per_task, summarise
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
