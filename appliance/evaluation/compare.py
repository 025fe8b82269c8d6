"""Candidate against the version in service (or the base), task by task and beside the
trivial baselines, through the gate; every decision stored with its report.

    evaluation = evaluate(config, db, "scope")     # the newest candidate
    evaluation.decision.verdict                    # "promote" | "reject" | "insufficient"

Before any model runs, the leak check: no evaluation task may appear in a row of the
dataset the candidate was trained on, else the evaluation refuses. Answers from elsewhere
(`evaluate_answers`) go through the same metrics, baselines and gate, and leave the
registry and the decisions alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance import registry
from appliance.config import Config
from appliance.datasets.versions import LeakCheck, leak_check
from appliance.errors import ForgeError, UsageError
from appliance.evaluation import answers, baselines, gate, metrics, spread
from appliance.evaluation import store as records
from appliance.evaluation.baselines import BaselineResult
from appliance.evaluation.heldout import EvaluationSet, evaluation_set
from appliance.evaluation.run import Arm, EvalRun, Evaluator
from appliance.records import as_json
from appliance.serving.pool import ModelPool
from appliance.stages import STAGE_ROLES, STAGES

Table = dict[str, dict[str, float]]  # metric -> task key -> the task's value


class EvaluationRefused(ForgeError):
    """The evaluation would measure what the candidate was trained on: it does not run."""


@dataclass(frozen=True)
class Evaluation:
    stage: str
    candidate: str
    baseline: str  # the version in service, or "base"
    source: str
    note: str
    examples: int
    runs: tuple[EvalRun | None, EvalRun]  # the candidate's is None for an answers file
    decision: gate.GateDecision
    decision_id: int | None  # None: not recorded (answers from elsewhere)
    baselines: tuple[BaselineResult, ...] = ()
    leak_check: LeakCheck | None = None

    def to_dict(self) -> dict:
        fields = ("stage", "candidate", "baseline", "source", "note", "examples", "decision_id")
        return as_json(self, *fields, reused=[bool(r and r.reused) for r in self.runs],
                       unit="task") | self.report()  # fmt: skip

    def report(self) -> dict:
        """What a stored decision keeps beside the gate's own: the example source, the
        baselines' scores and the leak check."""
        return self.decision.to_dict() | {
            "source": self.source,
            "note": self.note,
            "examples": self.examples,
            "unit": "task",
            "n_tasks": self.decision.n_tasks,
            "baselines": [
                {"name": b.name, "description": b.description, "scores": b.scores}
                for b in self.baselines
            ],
            "leak_check": self.leak_check.to_dict() if self.leak_check else None,
        }


def pick_candidate(db, stage: str, version: int | None) -> registry.AdapterVersion:
    """The version to evaluate: the one named, else the newest candidate."""
    _check_stage(stage)
    if version is not None:
        return registry.get(db, stage, version)
    newest = registry.newest_candidate(db, stage)
    if newest is None:
        raise UsageError(
            f"{stage} has no candidate adapter to evaluate",
            f"forge train {stage} makes one; forge adapters {stage} lists the versions",
        )
    return newest


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}", f"stages are: {', '.join(STAGES)}")


def task_table(db, stage: str, run: EvalRun) -> Table:
    """A stored run's outcomes, per task (each metric averaged over the task's items)."""
    return metrics.per_task(stage, records.outcomes(db, run.id))


def compare_tables(
    stage: str, ours: Table, theirs: Table, seed: int, resamples: int
) -> list[tuple[gate.MetricResult, list[str]]]:
    """One MetricResult per metric, paired by task over the tasks both sides scored, with
    those tasks."""
    results = []
    for metric, kind in metrics.METRICS[stage]:
        tasks = sorted(ours.get(metric, {}).keys() & theirs.get(metric, {}).keys())
        if not tasks:
            continue
        a, b = [ours[metric][t] for t in tasks], [theirs[metric][t] for t in tasks]
        if kind == "binary":
            result = gate.compare_binary(stage, metric, [x >= 0.5 for x in a],
                                         [x >= 0.5 for x in b])  # fmt: skip
        else:
            result = gate.compare_continuous(stage, metric, a, b, resamples=resamples, seed=seed)
        results.append((result, tasks))
    return results


def compare_runs(db, stage: str, candidate: EvalRun, baseline: EvalRun, seed: int, resamples: int):
    """One MetricResult per metric, paired by task over the tasks both runs scored."""
    ours, theirs = task_table(db, stage, candidate), task_table(db, stage, baseline)
    return [result for result, _ in compare_tables(stage, ours, theirs, seed, resamples)]


def best_baselines(
    compared: Sequence[tuple[gate.MetricResult, list[str]]], scored: Sequence[BaselineResult]
) -> dict[str, gate.BaselineScore]:
    """metric -> the best baseline's mean over exactly the tasks that metric compared."""
    best = {}
    for result, tasks in compared:
        means = []
        for b in scored:
            values = [b.per_task[t][result.metric] for t in tasks
                      if result.metric in b.per_task.get(t, {})]  # fmt: skip
            if len(values) == len(tasks):
                means.append((sum(values) / len(values), b.name))
        if means:
            value, name = max(means, key=lambda m: (m[0], m[1]))
            best[result.metric] = gate.BaselineScore(name, value)
    return best


@dataclass(frozen=True)
class _Judged:
    """One stage's evaluation before the gate: what it compared and against what."""

    version: registry.AdapterVersion | None
    active: registry.AdapterVersion | None
    runs: tuple[EvalRun | None, EvalRun]
    compared: list
    scored: tuple[BaselineResult, ...]
    leak: LeakCheck
    examples: int


def check_leaks(db, stage: str, version, examples) -> LeakCheck:
    """The leak check of `version` (None: the base) on the examples; refuses on a leak."""
    tasks = [e.key for e in examples]
    found = leak_check(db, version.dataset if version else None, tasks)
    under = version.metrics.get("built_on_dataset") if version else None
    if under and not found.leaks:  # DPO on an SFT version learnt that version's rows too
        found = leak_check(db, under, tasks)
    if found.leaks:
        raise EvaluationRefused(
            f"{found.leaks} of the {found.tasks} {stage} evaluation tasks are in rows of "
            f"{found.dataset}, which {version.name} was trained on "
            f"({', '.join(found.leaked)}): the evaluation would measure memory",
            "train a new candidate on a dataset version built under the current hold-out "
            "(forge datasets build, then forge train), then evaluate that",
        )
    return found


def evaluate_many(
    config: Config,
    db,
    candidates: Sequence[tuple[str, int | None]],
    *,
    pool=None,
    on_progress: Callable[[str, str, int, int], None] | None = None,
    evaluation: EvaluationSet | None = None,
    on_workers: Callable[[dict[str, str]], None] | None = None,
) -> list[Evaluation]:
    """Evaluate each (stage, version) against the stage's active version, and decide them
    together (Benjamini–Hochberg across the stages). A stage may come twice (the cycle's
    SFT and DPO candidates): each is compared with the active version on the same
    examples (the active version's run is made once and reused), and decided on its own.
    The evaluations come back in the order of `candidates`."""
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
    evaluation = evaluation or _evaluation_set(config, db)
    # With several devices, every run needed is made first, spread over them; the
    # comparisons below then find each one finished and reuse it.
    arms = [(stage, v) for stage, version, active in chosen for v in (version, active)]
    units = list(dict.fromkeys(spread.RunUnit(s, v.version if v else None) for s, v in arms))
    spread.spread_runs(
        config, evaluation, units, _spread_reporter(on_progress, len(units)), on_workers
    )
    own_pool = pool is None
    pool = pool or ModelPool.from_config(config)
    try:
        evaluator = Evaluator(config, db, pool, evaluation)
        stats = baselines.package_stats(config, db, evaluation.commits)
        judged = {(stage, version.version):
                  _judge(config, db, evaluator, stats, stage, version, active, on_progress)
                  for stage, version, active in chosen}  # fmt: skip
    finally:
        if own_pool:
            pool.close()
    decisions = _decide(config, judged)
    out = []
    for (stage, number), j in judged.items():
        ev = Evaluation(stage, j.version.name, j.active.name if j.active else "base",
                        evaluation.source, evaluation.note, j.examples, j.runs,
                        decisions[(stage, number)], None, j.scored, j.leak)  # fmt: skip
        decision_id = records.record_decision(
            db, stage, ev.candidate, ev.baseline, (j.runs[0].id, j.runs[1].id),
            ev.decision.verdict, ev.report(),
        )  # fmt: skip
        out.append(Evaluation(**{**ev.__dict__, "decision_id": decision_id}))
    return out


def _evaluation_set(config: Config, db) -> EvaluationSet:
    evaluation = evaluation_set(config, db)
    if not evaluation.commits:
        raise UsageError(
            "there is nothing to evaluate on: no eval package and no held-out commit is a "
            "usable task",
            "ingest an eval-split package, or raise evaluation.holdout_fraction in forge.toml",
        )
    return evaluation


def _judge(config, db, evaluator: Evaluator, stats, stage, version, active, on_progress):
    """Leak check, both arms' runs, the baselines, and the per-task comparison."""
    settings = config.settings.evaluation
    examples = evaluator.examples(stage)
    leak = check_leaks(db, stage, version, examples)
    arms = (Arm.of(config, evaluator.pool, stage, version),
            Arm.of(config, evaluator.pool, stage, active))  # fmt: skip
    runs = tuple(
        evaluator.run(stage, arm, on_example=_reporter(on_progress, stage, arm.name))
        for arm in arms
    )
    scored = tuple(baselines.score_baselines(stage, examples,
                                             baselines.baselines_for(stage, stats)))  # fmt: skip
    ours, theirs = task_table(db, stage, runs[0]), task_table(db, stage, runs[1])
    compared = compare_tables(stage, ours, theirs, settings.seed, settings.bootstrap_resamples)
    return _Judged(version, active, runs, compared, scored, leak, len(examples))


def _spread_reporter(on_progress, total: int):
    if on_progress is None:
        return None
    done = []

    def report(run: spread.RunDone) -> None:
        done.append(run)
        on_progress(run.unit.stage, f"{run.arm} on {run.device}", len(done), total)

    return report


def _decide(
    config: Config, judged: Mapping[gate.Key, _Judged]
) -> dict[gate.Key, gate.GateDecision]:
    settings = config.settings.evaluation
    return gate.decide_many(
        {key: [r for r, _ in j.compared] for key, j in judged.items()},
        alpha=settings.alpha,
        min_effect=settings.min_effect,
        max_regression=settings.max_regression,
        min_tasks=settings.min_tasks,
        baselines={key: best_baselines(j.compared, j.scored) for key, j in judged.items()},
    )


def head_to_head(config: Config, db, ours: Evaluation, theirs: Evaluation) -> Evaluation:
    """`ours` against `theirs`, two candidates of one stage evaluated against the same
    active version (their stored runs on the same examples, so no model runs again),
    through the gate: "promote" means `ours` is better than `theirs` by the gate's own
    rules (a significant gain beyond the best baseline, no regression), anything else
    that it is not. The decision is recorded, as `ours` vs `theirs`."""
    if ours.stage != theirs.stage or ours.runs[0] is None or theirs.runs[0] is None:
        raise ValueError("head_to_head compares two evaluated candidates of one stage")
    settings = config.settings.evaluation
    stage = ours.stage
    compared = compare_tables(stage, task_table(db, stage, ours.runs[0]),
                              task_table(db, stage, theirs.runs[0]), settings.seed,
                              settings.bootstrap_resamples)  # fmt: skip
    decision = gate.decide(
        stage,
        [r for r, _ in compared],
        alpha=settings.alpha,
        min_effect=settings.min_effect,
        max_regression=settings.max_regression,
        min_tasks=settings.min_tasks,
        baselines=best_baselines(compared, ours.baselines),
    )
    ev = Evaluation(stage, ours.candidate, theirs.candidate, ours.source, ours.note,
                    ours.examples, (ours.runs[0], theirs.runs[0]), decision, None,
                    ours.baselines, ours.leak_check)  # fmt: skip
    decision_id = records.record_decision(
        db, stage, ev.candidate, ev.baseline, (ours.runs[0].id, theirs.runs[0].id),
        decision.verdict, ev.report(),
    )  # fmt: skip
    return Evaluation(**{**ev.__dict__, "decision_id": decision_id})


def _reporter(on_progress, stage: str, name: str):
    if on_progress is None:
        return None
    return lambda i, n: on_progress(stage, name, i, n)


def evaluate(config: Config, db, stage: str, version: int | None = None, **kwargs) -> Evaluation:
    return evaluate_many(config, db, [(stage, version)], **kwargs)[0]


# --- answers from elsewhere ---------------------------------------------------------------


def export_examples(config: Config, db, stage: str, out: Path, *, pool=None) -> int:
    """Write the stage's evaluation examples to `out` (JSONL, no target); how many."""
    _check_stage(stage)
    evaluation = _evaluation_set(config, db)
    own_pool = pool is None
    pool = pool or ModelPool.from_config(config)
    try:
        evaluator = Evaluator(config, db, pool, evaluation)
        lines = []
        for example in evaluator.examples(stage):
            messages = evaluator.messages(example)
            prompt = pool.render_prompt(STAGE_ROLES[stage], messages)
            lines.append(answers.example_line(example, messages, prompt))
    finally:
        if own_pool:
            pool.close()
    return answers.write_examples(lines, out)


def evaluate_answers(
    config: Config,
    db,
    stage: str,
    path: Path,
    *,
    pool=None,
    on_progress: Callable[[str, str, int, int], None] | None = None,
) -> Evaluation:
    """Score a file of answers (`{"id", "answer"}` per line) on the stage's examples and
    put it through the gate against the version in service; nothing is recorded."""
    _check_stage(stage)
    settings = config.settings.evaluation
    evaluation = _evaluation_set(config, db)
    active = registry.active(db, stage)
    own_pool = pool is None
    pool = pool or ModelPool.from_config(config)
    try:
        evaluator = Evaluator(config, db, pool, evaluation)
        examples = evaluator.examples(stage)
        given = answers.read_answers(path, [e.key for e in examples])
        outcomes = []
        for i, example in enumerate(examples):
            answer = given.answers.get(example.key)
            raw, output = (answer.raw, answer.output) if answer else ("", None)
            _, _, scored = evaluator.judge(example, raw, output)
            outcomes += [records.StoredOutcome(example.key, o.item, o.metric, o.value)
                         for o in scored]  # fmt: skip
            if on_progress:
                on_progress(stage, "answers", i + 1, len(examples))
        arm = Arm.of(config, pool, stage, active)
        run = evaluator.run(stage, arm, on_example=_reporter(on_progress, stage, arm.name))
        stats = baselines.package_stats(config, db, evaluation.commits)
        scored_baselines = tuple(
            baselines.score_baselines(stage, examples, baselines.baselines_for(stage, stats))
        )
    finally:
        if own_pool:
            pool.close()
    ours = metrics.per_task(stage, outcomes)
    compared = compare_tables(stage, ours, task_table(db, stage, run), settings.seed,
                              settings.bootstrap_resamples)  # fmt: skip
    judged = _Judged(None, active, (None, run), compared, scored_baselines,
                     leak_check(db, None, [e.key for e in examples]), len(examples))  # fmt: skip
    decision = _decide(config, {stage: judged})[stage]  # one stage, keyed by its name
    note = evaluation.note
    if given.missing:
        note += f"; {len(given.missing)} example(s) without an answer count as unusable answers"
    return Evaluation(stage, f"answers:{path.name}", active.name if active else "base",
                      evaluation.source, note, len(examples), (None, run), decision, None,
                      scored_baselines, judged.leak)  # fmt: skip
