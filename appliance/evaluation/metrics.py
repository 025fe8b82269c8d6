"""The metrics of the Stages table, scored per example against the real commit.

Items (a file, a symbol) are scored one by one and stored so; every metric is then taken
per task (the mean over the task's items), because the files of one commit are not
independent: the task is the unit compared. `resolved` (plan, code) is a task's pass/fail
(McNemar); every other metric is a per-task fraction (a paired permutation test). An
unusable answer predicts nothing: its items count as wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.evaluation.store import StoredOutcome

# stage -> (metric, kind); all are primary: none may regress
METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "task_analysis": (("file_recall", "continuous"), ("file_precision", "continuous")),
    "scope": (("accuracy", "continuous"), ("relevant_recall", "continuous")),
    "precision": (("accuracy", "continuous"), ("primary_recall", "continuous")),
    "plan": (("resolved", "binary"),),
    "code": (("resolved", "binary"),),
}


@dataclass(frozen=True)
class Outcome:
    item: str  # "" for a per-example metric
    metric: str
    value: float  # 0/1 for binary metrics


def score(stage: str, target: dict, output: dict | None) -> list[Outcome]:
    """Outcomes of one answer (`output`, None when unusable) for a non-graded stage."""
    output = output or {}
    if stage == "task_analysis":
        real = set(target["files"])
        named = {p for p in output.get("files", []) if isinstance(p, str)}
        hit = len(real & named)
        return [
            Outcome("", "file_recall", hit / len(real)),
            Outcome("", "file_precision", hit / len(named) if named else 0.0),
        ]
    if stage == "scope":
        return _labels(target["files"], output.get("files"), "path", "relevant", "relevant_recall")
    if stage == "precision":
        return _labels(
            target["symbols"], output.get("symbols"), "symbol", "primary", "primary_recall"
        )
    raise ValueError(f"stage {stage!r} is graded by the harness, not scored from its answer")


def _labels(truth: list[dict], answer, key: str, wanted: str, recall: str) -> list[Outcome]:
    predicted: dict[str, str] = {}
    for item in answer if isinstance(answer, list) else []:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            predicted.setdefault(item[key], item.get("label"))  # a repeat does not overrule
    outcomes = []
    for item in truth:
        name, label = item[key], item["label"]
        outcomes.append(Outcome(name, "accuracy", float(predicted.get(name) == label)))
        if label == wanted:
            outcomes.append(Outcome(name, recall, float(predicted.get(name) == wanted)))
    return outcomes


def per_task(stage: str, outcomes: Iterable[StoredOutcome]) -> dict[str, dict[str, float]]:
    """metric -> task key -> the mean of that task's item values, for the stage's metrics
    (a task with no item of a metric is absent from it)."""
    sums: dict[str, dict[str, list[float]]] = {metric: {} for metric, _ in METRICS[stage]}
    for o in outcomes:
        if o.metric in sums:
            sums[o.metric].setdefault(o.example, []).append(o.value)
    return {
        metric: {task: sum(values) / len(values) for task, values in tasks.items()}
        for metric, tasks in sums.items()
    }


def summarise(stage: str, outcomes: Iterable[StoredOutcome]) -> dict[str, dict]:
    """metric -> {"value": the mean over tasks of the per-task values, "n": tasks,
    "items": item outcomes} over a run's stored outcomes."""
    outcomes = list(outcomes)
    tasks = per_task(stage, outcomes)
    out = {}
    for metric, _ in METRICS[stage]:
        values = list(tasks[metric].values())
        items = sum(1 for o in outcomes if o.metric == metric)
        mean = sum(values) / len(values) if values else None
        out[metric] = {"value": mean, "n": len(values), "items": items}
    return out
