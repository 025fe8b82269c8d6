"""`forge campaign run`: for each usable train commit, K samples of the five stages, each
graded in the sandbox and recorded as a triple.

A unit is (package, commit, sample); the executor hands out a commit's units still to
do together (`CommitUnits`). With `campaign.lockstep` (the default) the worker runs them
stage by stage together (`run_pipelines`: the samples' calls to one stage are decoded in
one batch, their shared first prompt prefilled once), else one after another. Each
unit's triple is written in one transaction when that unit is graded, and units already
recorded are skipped, so a campaign killed at any moment loses at most the commit in
progress's unrecorded units and never records one twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from appliance import index, resources
from appliance.campaign import store, targets, truth
from appliance.campaign.executor import DeviceExecutor, Executor, LocalExecutor, worker_device
from appliance.campaign.store import StageRecord, Triple
from appliance.config import Config
from appliance.harness.grading import grade_patch
from appliance.harness.results import gold_for
from appliance.harness.spec import CommitSpec, commit_specs, package_specs
from appliance.packages import corpus
from appliance.packages.corpus import find_package
from appliance.packages.split import Holdout
from appliance.registry import resolver
from appliance.serving.pool import ModelPool
from appliance.stages import STAGE_ROLES
from appliance.stages.context import ContextBuilder
from appliance.stages.pipeline import PipelineResult, StageSettings, run_pipeline, run_pipelines
from appliance.store import open_db


@dataclass(frozen=True)
class Unit:
    package: str
    sha: str
    sample: int
    temperature: float
    seed: int


CommitUnits = tuple[Unit, ...]  # units of one commit, handed out together


def by_commit(units: list[Unit]) -> list[CommitUnits]:
    """The units grouped by commit, in the order their commits first appear."""
    groups: dict[tuple[str, str], list[Unit]] = {}
    for unit in units:
        groups.setdefault((unit.package, unit.sha), []).append(unit)
    return [tuple(group) for group in groups.values()]


@dataclass(frozen=True)
class UnitResult:
    sha: str
    sample: int
    outcome: str  # resolved | failed | not_applied | tampered | infra | skipped
    reason: str
    seconds: dict
    device: str = ""  # the DeviceExecutor device that ran it; "" in this process's pool


def plan_units(
    config: Config, db, package: str, *, commits: int | None, samples: int, new: bool = False
) -> tuple[list[Unit], list[CommitSpec]]:
    """The units still to do: usable commits (graded by the harness first when needed),
    train split only and not held out for evaluation (the newest commits of the package
    name: `Holdout`), `samples` each. `commits` counts the first usable commits, or with
    `new` the first ones with units still to do."""
    found = find_package(db, package)
    if found.split == "eval":
        return [], []
    done = store.done_units(db, found.id)
    holdout = Holdout.of(config, db)
    usable = []
    for spec in package_specs(config, db, found):
        if not holdout.trainable(found.name, found.split, spec.sha):
            continue  # held out for evaluation: no model ever trains on it
        if new and all((spec.sha, i) in done for i in range(samples)):
            continue
        gold, _ = gold_for(config, db, spec)
        if gold.usable:
            usable.append(spec)
        if commits is not None and len(usable) >= commits:
            break
    temps = config.settings.campaign.temperatures
    units = [
        Unit(package, spec.sha, i, temps[i % len(temps)], _seed(spec.sha, i))
        for spec in usable
        for i in range(samples)
        if (spec.sha, i) not in done
    ]
    return units, usable


def _seed(sha: str, sample: int) -> int:
    return int(hashlib.sha256(f"{sha}:{sample}".encode()).hexdigest()[:8], 16)


class _Laps:
    """Where a unit's time went: seconds per phase, each lap ending the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._clock, 3)
        self._clock = now


@dataclass(frozen=True)
class _Graded:
    outcome: str
    reason: str
    grading: dict  # PatchVerdict.to_dict(); {} when nothing was graded
    diff: str
    changed: tuple[str, ...]


class Worker:
    """Runs units: one model pool, one database connection, indexes reused per commit."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = open_db(config)
        self.pool = ModelPool.from_config(config)
        self._specs: dict[str, CommitSpec] = {}

    def spec(self, unit: Unit) -> CommitSpec:
        if unit.sha not in self._specs:
            (self._specs[unit.sha],) = commit_specs(self.config, self.db, unit.package, [unit.sha])
        return self._specs[unit.sha]

    def __call__(self, units: CommitUnits) -> list[UnitResult]:
        """Run one commit's units (recorded ones are skipped); their results in order."""
        spec = self.spec(units[0])
        done = store.done_units(self.db, spec.package_id)
        todo = [u for u in units if (u.sha, u.sample) not in done]
        results = {
            u.sample: UnitResult(u.sha, u.sample, "skipped", "already recorded", {})
            for u in units
            if (u.sha, u.sample) in done
        }
        if todo:
            for unit, result in zip(todo, self._run(spec, todo), strict=True):
                results[unit.sample] = result
        return [results[u.sample] for u in units]

    def _run(self, spec: CommitSpec, units: list[Unit]) -> list[UnitResult]:
        lap = _Laps()
        gold, _ = gold_for(self.config, self.db, spec)
        lap("harness_gold")
        snapshot = index.index_commit(self.db, spec.repo, spec.parent, package_id=spec.package_id)
        builder = ContextBuilder(
            self.db,
            snapshot,
            lambda text: self.pool.count_tokens(STAGE_ROLES["scope"], text),
        )
        lap("indexing")
        if self.config.settings.campaign.lockstep and len(units) > 1:
            pipelines = self._stages_together(units, spec, builder)
        else:
            pipelines = [self._stages(unit, spec, builder) for unit in units]
        lap("model_calls")
        shared = {k: round(v / len(units), 3) for k, v in lap.seconds.items()}
        real = truth.commit_truth(spec)
        if any(u.sample == 0 for u in units) or not store.has_pairs(
            self.db, spec.package_id, spec.sha
        ):
            self._record_pairs(spec, snapshot, builder, real)
        return [
            self._finish(unit, spec, gold, snapshot, builder, real, result, shared)
            for unit, result in zip(units, pipelines, strict=True)
        ]

    def _finish(self, unit, spec, gold, snapshot, builder, real, result, shared) -> UnitResult:
        """Grade one unit's edits and record its triple. Its seconds: its share of the
        commit's gold grading, indexing and model calls, and its own sandbox time."""
        lap = _Laps()
        graded = self._grade(spec, gold, result)
        lap("sandbox")
        before = {
            p: index.file_text(self.db, snapshot.id, p)
            for p in graded.changed
            if p in builder.files
        }
        plan = result.stages.get("plan")
        aligned = truth.alignment(
            real,
            plan.output if plan else None,
            graded.changed,
            truth.symbols_of_diff(graded.diff, before),
        )
        seconds = shared | lap.seconds
        store.record_triple(self.db, _triple(unit, spec, result, graded, aligned, seconds))
        return UnitResult(
            unit.sha, unit.sample, graded.outcome, graded.reason, seconds, worker_device()
        )

    def _settings(self, unit: Unit) -> StageSettings:
        settings = self.config.settings.campaign
        return StageSettings(
            temperature=unit.temperature,
            seed=unit.seed,
            max_tokens=settings.max_tokens,
            context_tokens=settings.context_tokens,
        )

    def _stages(self, unit: Unit, spec: CommitSpec, builder: ContextBuilder) -> PipelineResult:
        return run_pipeline(
            self.pool,
            builder,
            spec.message,
            settings=self._settings(unit),
            adapters=resolver(self.config, self.db),  # each stage's active version, now
        )

    def _stages_together(
        self, units: list[Unit], spec: CommitSpec, builder: ContextBuilder
    ) -> list[PipelineResult]:
        return run_pipelines(
            self.pool,
            builder,
            spec.message,
            [self._settings(unit) for unit in units],
            adapters=resolver(self.config, self.db),  # asked once per stage's batch
        )

    def _record_pairs(self, spec: CommitSpec, snapshot, builder: ContextBuilder, real) -> None:
        """The pairs the real commit implies for each stage, recorded once per commit."""
        present = [p for p in real.files if p in builder.files]
        # The retrieval without hints, then the same label-blind list evaluation uses:
        # no candidate's position or why tells which files the commit changed.
        package = corpus.package_by_id(self.db, spec.package_id)
        key = targets.task_key(package.name if package else spec.package, spec.sha)
        candidates = targets.scope_candidates(builder.candidates(spec.message), present, key)
        symbol_ids = [
            f"{s.path}::{s.qualname}"
            for s in index.symbols(self.db, snapshot.id, [p for p, _ in candidates])
        ]
        pairs = truth.synthetic_pairs(spec, real, candidates, symbol_ids, set(builder.files))
        store.record_pairs(
            self.db,
            [
                store.SyntheticPair(spec.package_id, spec.sha, stage, given, target)
                for stage, (given, target) in pairs.items()
            ],
        )

    def _grade(self, spec: CommitSpec, gold, result: PipelineResult) -> _Graded:
        """The code stage's edits applied to the parent and graded by the commit's tests."""
        if not result.edits:
            code = result.stages.get("code")
            if code is not None and code.error:
                reason = f"the code stage gave no edits ({code.error})"
            else:
                reason = "the code stage gave no edits"
            return _Graded("not_applied", reason, {}, "", ())
        verdict = grade_patch(self.config, spec, gold, "search_replace", result.edits)
        return _Graded(
            verdict.verdict, verdict.reason, verdict.to_dict(), verdict.diff, verdict.changed
        )


def _triple(unit, spec, result: PipelineResult, graded: _Graded, aligned, seconds) -> Triple:
    return Triple(
        package_id=spec.package_id,
        sha=spec.sha,
        sample=unit.sample,
        snapshot_sha=spec.parent,
        temperature=unit.temperature,
        seed=unit.seed,
        stages=tuple(
            StageRecord(r.stage, r.output, r.call_id, r.adapter, r.error, r.context.to_dict())
            for r in result.stages.values()
        ),
        edits=tuple(result.edits),
        diff=graded.diff,
        outcome=graded.outcome,
        reason=graded.reason,
        grading=graded.grading,
        alignment=aligned,
        seconds=seconds,
    )


def run_campaign(
    config: Config,
    db,
    package: str,
    *,
    commits: int | None = None,
    samples: int | None = None,
    executor: Executor | None = None,
    on_planned: Callable[[list[Unit], list[CommitSpec]], None] | None = None,
    new: bool = False,
    on_workers: Callable[[dict[str, str]], None] | None = None,
) -> Iterator[UnitResult]:
    """Plan the units still to do and run them; yields each unit's result as it ends.
    With `new`, `commits` counts commits not yet done (the next ones), not the first.
    `on_workers` hears what each device's worker does ({device: text, "" when idle}) when
    the campaign is spread over devices."""
    samples = samples or config.settings.campaign.samples
    units, usable = plan_units(config, db, package, commits=commits, samples=samples, new=new)
    if on_planned:
        on_planned(units, usable)
    executor = executor or executor_for(config, on_workers)
    for results in executor.run(by_commit(units), _WorkerFactory(config)):
        yield from results


def executor_for(
    config: Config, on_workers: Callable[[dict[str, str]], None] | None = None
) -> Executor:
    """A DeviceExecutor over `campaign.devices` (["all"]: every GPU this process may use,
    those `forge serve` holds left out, when there are two or more: under forged, the GPUs
    the job holds), else `campaign.workers` local processes."""
    settings = config.settings.campaign
    devices = settings.devices
    if devices == ["all"]:
        devices = resources.job_gpus(config.settings.serve.gpus)
        devices = devices if len(devices) >= 2 else []  # one GPU: this process uses it
    if devices:
        on_busy = None
        if on_workers is not None:

            def on_busy(busy: dict[str, object]) -> None:
                on_workers({d: _doing(units) for d, units in busy.items()})

        return DeviceExecutor(devices, on_busy)
    return LocalExecutor(settings.workers)


def _doing(units: CommitUnits | None) -> str:
    """A device worker's current work in a few words: the commit and its samples."""
    if not units:
        return ""
    samples = len(units)
    return f"{units[0].package} {units[0].sha[:8]} ({samples} sample{'s' * (samples > 1)})"


class _WorkerFactory:
    """Picklable: each process of a process pool makes its own worker."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self) -> Worker:
        return Worker(self.config)
