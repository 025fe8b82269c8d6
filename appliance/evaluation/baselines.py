"""Trivial baselines: answers that need no model, scored on the evaluation examples with
the same metrics code and the same per-task aggregation as the gate.

An adapter that cannot beat "every file irrelevant" or "the package's most-changed files"
has learned nothing worth promoting. Every baseline is answer-free: it sees the example's
input (what the prompt lists, the retrieval's ranks) and statistics of the package's
TRAINING commits only (never an evaluation commit).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from appliance.campaign import store as campaign_store
from appliance.config import Config
from appliance.evaluation import metrics
from appliance.evaluation.examples import GRADED, Example
from appliance.harness.spec import CommitSpec, is_test_path, package_specs
from appliance.packages import corpus, gitsafe
from appliance.packages.split import Holdout

K = 2  # files a "top-k" baseline names

SCOPE_LABELS = ("relevant", "supporting", "irrelevant")
PRECISION_LABELS = ("primary", "supporting", "excluded")


@dataclass(frozen=True)
class PackageStats:
    """What the training commits say, per package name: how often each source file was
    changed, and how often each label occurs in the stored synthetic pairs."""

    names: dict[int, str]  # package id -> name
    changed: dict[str, dict[str, int]]  # name -> {path: training commits that changed it}
    labels: dict[str, dict[str, int]]  # stage -> {label: count} over training pairs

    def changes(self, spec: CommitSpec) -> dict[str, int]:
        return self.changed.get(self.names.get(spec.package_id, ""), {})

    def most_changed(self, spec: CommitSpec, k: int) -> list[str]:
        counts = self.changes(spec)
        return sorted(counts, key=lambda p: (-counts[p], p))[:k]

    def majority(self, stage: str, default: str) -> str:
        counts = self.labels.get(stage, {})
        return max(sorted(counts), key=lambda label: counts[label]) if counts else default


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    answer: Callable[[Example], dict | None]


@dataclass(frozen=True)
class BaselineResult:
    name: str
    description: str
    per_task: dict[str, dict[str, float]]  # task key -> metric -> the task's mean
    scores: dict[str, float]  # metric -> mean over tasks


def _changed_files(spec: CommitSpec) -> list[str]:
    names = gitsafe.git(
        ["diff", "--name-only", "--no-renames", "-z", spec.parent, spec.sha], git_dir=spec.repo
    ).decode("utf-8", "replace")
    return [p for p in names.split("\0") if p and not is_test_path(p)]


def package_stats(config: Config, db, evaluation: Iterable[CommitSpec]) -> PackageStats:
    """Statistics of every train package's trainable commits, never counting the
    `evaluation` commits (nor any held-out one)."""
    held = {spec.sha for spec in evaluation}
    names: dict[int, str] = {}
    changed: dict[str, Counter] = {}
    labels: dict[str, Counter] = {"scope": Counter(), "precision": Counter()}
    holdout = Holdout.of(config, db)
    for package in corpus.packages(db):
        names[package.id] = package.name
        for spec in package_specs(config, db, package):
            if spec.sha in held or not holdout.trainable(package.name, package.split, spec.sha):
                continue
            changed.setdefault(package.name, Counter()).update(_changed_files(spec))
            for stage, field in (("scope", "files"), ("precision", "symbols")):
                pair = campaign_store.synthetic_pair(db, package.id, spec.sha, stage)
                for item in pair.target.get(field, []) if pair else []:
                    labels[stage][item.get("label")] += 1
    return PackageStats(
        names,
        {name: dict(counts) for name, counts in changed.items()},
        {stage: dict(counts) for stage, counts in labels.items()},
    )


# --- answers ------------------------------------------------------------------------------


def _label_all(listed: str, out: str, key: str, pick: Callable, yes: str, no: str):
    """An answer labelling the items the input lists under `listed` that `pick` picks
    `yes`, the rest `no`, in the stage's output shape (`out`: a list of {key, label})."""

    def answer(example: Example) -> dict:
        items = list(example.input[listed])
        picked = pick(items)
        return {out: [{key: i, "label": yes if i in picked else no} for i in items]}

    return answer


def _first(items: list[str]) -> set[str]:
    return set(items[:1])


def _longest(items: list[str]) -> set[str]:
    return {max(items, key=len)} if items else set()


def _labelling(
    stage: str,
    stats: PackageStats,
    answer,
    noun: str,
    item: str,
    labels: tuple[str, ...],
    default: str,
    extra: list[Baseline],
) -> list[Baseline]:
    """A labelling stage's baselines: each constant label, the training pairs' majority,
    first-listed and longest `yes` (answer's default), then the stage's own `extra`."""
    yes, majority = labels[0], stats.majority(stage, default)
    return [
        *(Baseline(f"all-{label}", f"every {noun} {label}", answer(lambda _: set(), no=label))
          for label in labels),
        Baseline("majority", f"every {noun} {majority} (the training pairs' majority)",
                 answer(lambda _: set(), no=majority)),
        Baseline("first-listed", f"the first {noun} listed {yes}", answer(_first)),
        Baseline("longest", f"the longest {item} {yes}", answer(_longest)),
        *extra,
    ]  # fmt: skip


def _scope(stats: PackageStats) -> list[Baseline]:
    def answer(pick, yes="relevant", no="irrelevant"):
        return _label_all("candidates", "files", "path", pick, yes, no)

    def top_retrieved(example: Example) -> dict:
        rank = example.input["retrieval_rank"]
        top = set(sorted(rank, key=rank.get)[:K])
        return answer(lambda _: top)(example)

    def most_changed(example: Example) -> dict:
        counts = stats.changes(example.spec)
        shown = [p for p in example.input["candidates"] if counts.get(p)]
        top = set(sorted(shown, key=lambda p: -counts[p])[:K])
        return answer(lambda _: top)(example)

    return _labelling("scope", stats, answer, "candidate", "path", SCOPE_LABELS, "irrelevant", [
        Baseline("retrieval-top", f"the retrieval's top {K} relevant", top_retrieved),
        Baseline("most-changed", f"of the candidates, the {K} the training commits changed "
                 "most relevant", most_changed),
    ])  # fmt: skip


def _precision(stats: PackageStats) -> list[Baseline]:
    def answer(pick, yes="primary", no="excluded"):
        return _label_all("symbols", "symbols", "symbol", pick, yes, no)

    def most_changed_file(example: Example) -> dict:
        counts = stats.changes(example.spec)
        files = [s.split("::", 1)[0] for s in example.input["symbols"]]
        ranked = sorted((f for f in files if counts.get(f)), key=lambda f: -counts[f])
        top = ranked[0] if ranked else None
        return answer(lambda items: {s for s in items if s.split("::", 1)[0] == top})(example)

    return _labelling("precision", stats, answer, "symbol", "symbol id", PRECISION_LABELS,
                      "excluded", [
        Baseline("most-changed", "the symbols of the listed file the training commits "
                 "changed most primary", most_changed_file),
    ])  # fmt: skip


def _task_analysis(stats: PackageStats) -> list[Baseline]:
    return [
        Baseline(
            "most-changed",
            f"the {K} files the package's training commits changed most",
            lambda e: {"files": stats.most_changed(e.spec, K)},
        ),
        Baseline(
            "retrieval-top",
            f"the retrieval's top {K} files",
            lambda e: {"files": list(e.input["retrieved"][:K])},
        ),
        Baseline("empty", "no file named", lambda e: {"files": []}),
    ]


def baselines_for(stage: str, stats: PackageStats) -> list[Baseline]:
    """The trivial baselines of `stage`."""
    if stage in GRADED:
        return [Baseline("no-edits", "no edits: the task is never resolved", lambda e: None)]
    builders = {"scope": _scope, "precision": _precision, "task_analysis": _task_analysis}
    if stage not in builders:
        raise ValueError(f"unknown stage {stage!r}")
    return builders[stage](stats)


# --- scoring ------------------------------------------------------------------------------


def task_scores(outcomes: Iterable[metrics.Outcome]) -> dict[str, float]:
    """metric -> the mean over one task's items: every metric is per task first."""
    values: dict[str, list[float]] = {}
    for outcome in outcomes:
        values.setdefault(outcome.metric, []).append(outcome.value)
    return {metric: sum(v) / len(v) for metric, v in values.items()}


def _score(stage: str, example: Example, baseline: Baseline) -> dict[str, float]:
    if stage in GRADED:  # answer-free edits never resolve a task: no harness run needed
        return {"resolved": 0.0}
    return task_scores(metrics.score(stage, example.target, baseline.answer(example)))


def score_baselines(
    stage: str, examples: Sequence[Example], baselines: Sequence[Baseline]
) -> list[BaselineResult]:
    """Each baseline's per-task scores on `examples`, and their means over tasks."""
    results = []
    for baseline in baselines:
        per_task = {e.key: _score(stage, e, baseline) for e in examples}
        scores = {}
        for metric, _ in metrics.METRICS[stage]:
            values = [t[metric] for t in per_task.values() if metric in t]
            if values:
                scores[metric] = sum(values) / len(values)
        results.append(BaselineResult(baseline.name, baseline.description, per_task, scores))
    return results


def best(results: Sequence[BaselineResult], metric: str) -> BaselineResult | None:
    """The baseline with the highest score on `metric` (None when none has one)."""
    scored = [r for r in results if metric in r.scores]
    return max(scored, key=lambda r: r.scores[metric]) if scored else None
