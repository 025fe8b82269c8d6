"""Candidate against the version in service (or the base), pair by pair, through the gate;
every decision stored with its report.

    evaluation = evaluate(config, db, "scope")            # the newest candidate
    evaluation.decision.verdict                           # "promote" | "reject"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance import registry
from appliance.config import Config
from appliance.errors import UsageError
from appliance.evaluation import gate, metrics
from appliance.evaluation import store as records
from appliance.evaluation.heldout import EvaluationSet, evaluation_set
from appliance.evaluation.run import Arm, EvalRun, Evaluator
from appliance.records import as_json
from appliance.serving.pool import ModelPool
from appliance.stages import STAGES


@dataclass(frozen=True)
class Evaluation:
    stage: str
    candidate: str
    baseline: str
    source: str
    note: str
    examples: int
    runs: tuple[EvalRun, EvalRun]
    decision: gate.GateDecision
    decision_id: int

    def to_dict(self) -> dict:
        fields = ("stage", "candidate", "baseline", "source", "note", "examples", "decision_id")
        reused = [r.reused for r in self.runs]
        return as_json(self, *fields, reused=reused) | self.decision.to_dict()


def pick_candidate(db, stage: str, version: int | None) -> registry.AdapterVersion:
    """The version to evaluate: the one named, else the newest candidate."""
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}", f"stages are: {', '.join(STAGES)}")
    if version is not None:
        return registry.get(db, stage, version)
    newest = registry.newest_candidate(db, stage)
    if newest is None:
        raise UsageError(
            f"{stage} has no candidate adapter to evaluate",
            f"forge train {stage} makes one; forge adapters {stage} lists the versions",
        )
    return newest


def compare_runs(db, stage: str, candidate: EvalRun, baseline: EvalRun, seed: int, resamples: int):
    """One MetricResult per metric, paired by task over the tasks both runs scored: each
    run's item outcomes are first taken per task (metrics.per_task)."""
    ours = metrics.per_task(stage, records.outcomes(db, candidate.id))
    theirs = metrics.per_task(stage, records.outcomes(db, baseline.id))
    results = []
    for metric, kind in metrics.METRICS[stage]:
        tasks = sorted(ours[metric].keys() & theirs[metric].keys())
        if not tasks:
            continue
        a, b = [ours[metric][t] for t in tasks], [theirs[metric][t] for t in tasks]
        if kind == "binary":
            results.append(gate.compare_binary(stage, metric, [x >= 0.5 for x in a],
                                               [x >= 0.5 for x in b]))  # fmt: skip
        else:
            results.append(
                gate.compare_continuous(stage, metric, a, b, resamples=resamples, seed=seed)
            )
    return results


def evaluate_many(
    config: Config,
    db,
    candidates: Sequence[tuple[str, int | None]],
    *,
    pool=None,
    on_progress: Callable[[str, str, int, int], None] | None = None,
    evaluation: EvaluationSet | None = None,
) -> list[Evaluation]:
    """Evaluate each (stage, version) against the stage's active version, and decide them
    together (Benjamini–Hochberg across the stages)."""
    settings = config.settings.evaluation
    chosen = [
        (stage, pick_candidate(db, stage, version), registry.active(db, stage))
        for stage, version in candidates
    ]
    for stage, version, active in chosen:
        if active is not None and active.version == version.version:
            raise UsageError(
                f"{version.name} is the version in service: there is nothing to compare it with",
                f"evaluate a candidate (forge adapters {stage} lists them), or roll back first "
                "to compare it with the version before",
            )
    evaluation = evaluation or evaluation_set(config, db)
    if not evaluation.commits:
        raise UsageError(
            "there is nothing to evaluate on: no eval package and no held-out commit is a "
            "usable task",
            "ingest an eval-split package, or raise evaluation.holdout_fraction in forge.toml",
        )
    own_pool = pool is None
    pool = pool or ModelPool.from_config(config)
    try:
        evaluator = Evaluator(config, db, pool, evaluation)
        pairs, results = {}, {}
        for stage, version, active in chosen:
            arms = (Arm.of(config, pool, stage, version), Arm.of(config, pool, stage, active))

            runs = tuple(
                evaluator.run(stage, arm, on_example=_reporter(on_progress, stage, arm.name))
                for arm in arms
            )
            pairs[stage] = (version, active, runs)
            results[stage] = compare_runs(db, stage, *runs, settings.seed,
                                          settings.bootstrap_resamples)  # fmt: skip
        decisions = gate.decide_many(results, alpha=settings.alpha, min_effect=settings.min_effect)
    finally:
        if own_pool:
            pool.close()
    out = []
    for stage, (version, active, runs) in pairs.items():
        decision = decisions[stage]
        baseline = active.name if active else "base"
        report = decision.to_dict() | {"source": evaluation.source, "note": evaluation.note,
                                       "examples": len(evaluator.examples(stage))}  # fmt: skip
        decision_id = records.record_decision(
            db, stage, version.name, baseline, (runs[0].id, runs[1].id), decision.verdict, report
        )
        out.append(Evaluation(stage, version.name, baseline, evaluation.source, evaluation.note,
                              report["examples"], runs, decision, decision_id))  # fmt: skip
    return out


def _reporter(on_progress, stage: str, name: str):
    if on_progress is None:
        return None
    return lambda i, n: on_progress(stage, name, i, n)


def evaluate(config: Config, db, stage: str, version: int | None = None, **kwargs) -> Evaluation:
    return evaluate_many(config, db, [(stage, version)], **kwargs)[0]
