"""One cycle, top to bottom: ingest → campaign on new train commits → datasets → train
candidates for the stages with enough new data → evaluate → promote or reject → report.

Every step is idempotent, so an interrupted cycle run again picks up where it stopped:
ingest recognises packages it has, campaign units already recorded are skipped, a
dataset version is made only from new rows, a stage is not trained twice on one dataset
version (and a killed training run resumes from its checkpoints), a finished evaluation
run is reused, and a candidate that was already decided is not decided again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance import registry
from appliance.campaign.run import run_campaign
from appliance.clock import now_iso
from appliance.config import Config
from appliance.datapackages.take import take_data_package
from appliance.datasets.versions import build, latest, rows_made_from
from appliance.errors import ForgeError
from appliance.evaluation.compare import evaluate_many
from appliance.packages import corpus
from appliance.packages.ingest import ingest
from appliance.records import as_json
from appliance.training.job import train_stage

STEPS = ("ingest", "campaign", "datasets", "train", "evaluate")


@dataclass(frozen=True)
class Step:
    """What one step of the cycle did: its status, what it reports, how long it took."""

    name: str
    status: str = "ok"  # ok | skipped | failed
    detail: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class CycleReport:
    """The steps that ran, the gate's decisions, and where the report was saved."""

    started_at: str
    steps: tuple[Step, ...] = ()
    decisions: tuple[dict, ...] = ()  # each as the cycle report's JSON shows it
    path: str = ""

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    def to_dict(self) -> dict:
        return as_json(self, "started_at", "ok", "steps", "decisions", report=self.path)


class Progress:
    """What the loop tells whoever shows it (the CLI's progress bars; the daemon's log)."""

    def step(self, name: str, text: str) -> None: ...
    def advance(self, name: str, done: int, total: int, text: str = "") -> None: ...
    def done(self, step: Step) -> None: ...


def run_cycle(
    config: Config,
    db,
    *,
    source: Path | None = None,
    keep: bool = False,
    commits: int | None = None,
    progress: Progress | None = None,
    only: tuple[str, ...] | None = None,
    resume: dict[str, dict] | None = None,
) -> CycleReport:
    """The whole loop, or with `only` just those steps (the daemon's campaign, train and
    evaluate jobs are parts of it: the same idempotent steps). `resume` holds the steps
    an interrupted run of the same job finished (name → Step fields): they are not run
    again, so a cycle killed while training resumes that training rather than starting a
    campaign on the next commit first."""
    unknown = set(only or ()) - set(STEPS)
    if unknown:
        raise ForgeError(f"unknown cycle steps: {sorted(unknown)}; the steps: {', '.join(STEPS)}")
    progress = progress or Progress()
    started_at = now_iso()
    settings = config.settings.cycle
    commits = commits if commits is not None else (settings.commits or None)
    steps: list[Step] = []
    decisions: list[dict] = []  # _evaluate adds the gate's decisions as it acts on them

    def step(name: str, fn: Callable[[], Step]) -> None:
        if only is not None and name not in only:
            return
        if resume and name in resume:
            steps.append(Step(**resume[name]))
            return
        progress.step(name, name)
        clock = time.monotonic()
        try:
            done = fn()
        except ForgeError as exc:  # the later steps still run on what exists
            done = Step(name, "failed", {"error": exc.message, "hint": exc.hint})
        done = dataclasses.replace(done, seconds=round(time.monotonic() - clock, 1))
        steps.append(done)
        progress.done(done)

    step("ingest", lambda: _ingest(config, db, source, keep))
    step("campaign", lambda: _campaign(config, db, commits, progress))
    step("datasets", lambda: _datasets(config, db))
    step("train", lambda: _train(config, db, progress))
    step("evaluate", lambda: _evaluate(config, db, progress, decisions))
    return _save(config, CycleReport(started_at, tuple(steps), tuple(decisions)))


def _ingest(config: Config, db, source: Path | None, keep: bool) -> Step:
    trained_rows = functools.partial(rows_made_from, db)
    take_data = functools.partial(take_data_package, config, db)
    results = ingest(config, db, source, keep=keep, trained_rows=trained_rows, take_data=take_data)
    detail: dict = dict(Counter(r.outcome for r in results))
    detail["packages"] = [f"{r.name or r.source}: {r.outcome}" for r in results]
    if "rejected" not in detail:
        return Step("ingest", "ok", detail)
    detail["error"] = "some packages were rejected (see forge status and quarantine/)"
    return Step("ingest", "failed", detail)


def _campaign(config: Config, db, commits: int | None, progress: Progress) -> Step:
    outcomes: Counter = Counter()
    packages = corpus.names(db, include_eval=False)
    for package in packages:
        planned = {"n": 0}

        def on_planned(units, usable, planned=planned):
            planned["n"] = len(units)

        for i, result in enumerate(
            run_campaign(config, db, package, commits=commits, on_planned=on_planned, new=True),
            1,
        ):
            outcomes[result.outcome] += 1
            progress.advance("campaign", i, planned["n"], f"{package}: {result.outcome}")
    detail = {"packages": packages, "units": sum(outcomes.values()), **outcomes}
    if not outcomes:
        return Step("campaign", "skipped", detail | {"why": "no new train commits"})
    return Step("campaign", "ok", detail)


def _datasets(config: Config, db) -> Step:
    made = []
    for stage in config.settings.cycle.stages:
        version = build(config, db, stage, "sft")
        if version is not None:
            made.append({"name": version.name, "rows": version.rows,
                         "new_rows": version.new_rows, "status": version.status,
                         "reasons": version.reasons})  # fmt: skip
    if not made:
        return Step("datasets", "skipped", {"versions": made, "why": "no new rows"})
    return Step("datasets", "ok", {"versions": made})


def _train(config: Config, db, progress: Progress) -> Step:
    """Train each stage whose latest SFT dataset passed its gates, was not trained on yet,
    and brought at least `cycle.min_new_rows` new rows."""
    trained, passed = [], []
    for stage in config.settings.cycle.stages:
        dataset = latest(db, stage, "sft")
        why = None
        if dataset is None:
            why = "no dataset"
        elif any(a.dataset == dataset.name for a in registry.adapters(db, stage)):
            why = f"{dataset.name} already trained"
        elif dataset.status != "ok":
            why = f"{dataset.name} failed its quality gates: " + "; ".join(dataset.reasons)
        elif dataset.new_rows < config.settings.cycle.min_new_rows:
            why = f"{dataset.name} has {dataset.new_rows} new rows (< {config.settings.cycle.min_new_rows})"  # noqa: E501
        if why:
            passed.append({"stage": stage, "why": why})
            continue
        progress.advance("train", len(trained), len(config.settings.cycle.stages), stage)
        adapter = train_stage(config, db, stage)
        trained.append({"stage": stage, "adapter": adapter.name, "dataset": adapter.dataset,
                        "steps": adapter.metrics["steps"],
                        "final_loss": adapter.metrics["final_loss"]})  # fmt: skip
    return Step(
        "train", "ok" if trained else "skipped", {"trained": trained, "not_trained": passed}
    )


def _evaluate(config: Config, db, progress: Progress, decisions: list[dict]) -> Step:
    """Decide every candidate still undecided (this cycle's, or one an interrupted cycle
    trained), all stages together, then promote or reject each (added to `decisions` as
    it is done, so a failure half-way still reports what was decided)."""
    waiting = {}
    for stage in config.settings.cycle.stages:
        newest = registry.newest_candidate(db, stage)  # older ones stay candidates
        if newest is not None:
            waiting[stage] = newest.version
    if not waiting:
        return Step("evaluate", "skipped", {"why": "no candidate to evaluate"})

    def on_progress(stage, arm, i, n):
        progress.advance("evaluate", i, n, f"{stage}: {arm}")

    evaluations = evaluate_many(config, db, list(waiting.items()), on_progress=on_progress)
    n = len(evaluations)
    progress.advance("evaluate", n, n, "deciding: promote or reject")
    # The decisions are stored, the registry not yet changed. Each promote or reject is one
    # transaction: one killed before its commit leaves the candidate for the next run.
    for ev in evaluations:
        number = waiting[ev.stage]  # the version evaluate_many was given for the stage
        if ev.decision.verdict == "promote":
            registry.promote(db, ev.stage, number, decision_id=ev.decision_id)
            action = "promoted"
        elif ev.decision.verdict == "reject":
            registry.reject(db, ev.stage, number, decision_id=ev.decision_id)
            action = "rejected"
        else:  # too few tasks to say: the candidate waits for more evaluation data
            action = "kept as a candidate (insufficient evidence)"
        decisions.append({"stage": ev.stage, "candidate": ev.candidate,
                          "baseline": ev.baseline, "action": action,
                          "decision_id": ev.decision_id, **ev.report()})  # fmt: skip
    return Step(
        "evaluate", "ok", {"decided": [f"{d['candidate']}: {d['action']}" for d in decisions]}
    )


def _save(config: Config, report: CycleReport) -> CycleReport:
    """The report written to runs/cycle/ (atomically), with its path."""
    folder = config.dir("runs") / "cycle"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cycle-{report.started_at.replace(':', '')}.json"
    report = dataclasses.replace(report, path=str(path.relative_to(config.home)))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=1, default=str))
    tmp.replace(path)
    return report
