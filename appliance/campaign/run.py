"""`forge campaign run`: for each usable train commit, K samples of the five stages, each
graded in the sandbox and recorded as a triple.

A unit of work is (package, commit, sample). Its triple is written in one transaction
when the unit is complete, and units already recorded are skipped, so a campaign killed
at any moment loses at most the unit in progress and never records one twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from appliance import index
from appliance.campaign import store, truth
from appliance.campaign.executor import Executor, LocalExecutor
from appliance.config import Config
from appliance.harness.grading import grade_patch
from appliance.harness.results import gold_for
from appliance.harness.spec import CommitSpec, commit_specs, package_specs
from appliance.packages.corpus import find_package
from appliance.packages.split import trainable
from appliance.registry import resolver
from appliance.stages import STAGE_ROLES
from appliance.stages.context import ContextBuilder
from appliance.stages.pipeline import StageSettings, run_pipeline


@dataclass(frozen=True)
class Unit:
    package: str
    sha: str
    sample: int
    temperature: float
    seed: int


@dataclass(frozen=True)
class UnitResult:
    sha: str
    sample: int
    outcome: str  # resolved | failed | not_applied | tampered | infra | skipped
    reason: str
    seconds: dict


def plan_units(
    config: Config, db, package: str, *, commits: int | None, samples: int, new: bool = False
) -> tuple[list[Unit], list[CommitSpec]]:
    """The units still to do: usable commits (graded by the harness first when needed),
    train split only and not held out for evaluation, `samples` each. `commits` counts
    the first usable commits, or with `new` the first ones with units still to do."""
    found = find_package(db, package)
    if found.split == "eval":
        return [], []
    done = store.done_units(db, found.id)
    usable = []
    for spec in package_specs(config, db, found):
        if not trainable(config, found.split, spec.sha):
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


class Worker:
    """Runs units: one model pool, one database connection, indexes reused per commit."""

    def __init__(self, config: Config) -> None:
        from appliance.serving.pool import ModelPool
        from appliance.store import open_db

        self.config = config
        self.db = open_db(config)
        self.pool = ModelPool.from_config(config)
        self._specs: dict[str, CommitSpec] = {}

    def spec(self, unit: Unit) -> CommitSpec:
        if unit.sha not in self._specs:
            (self._specs[unit.sha],) = commit_specs(self.config, self.db, unit.package, [unit.sha])
        return self._specs[unit.sha]

    def __call__(self, unit: Unit) -> UnitResult:
        spec = self.spec(unit)
        if (unit.sha, unit.sample) in store.done_units(self.db, spec.package_id):
            return UnitResult(unit.sha, unit.sample, "skipped", "already recorded", {})
        seconds: dict[str, float] = {}
        clock = time.monotonic()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.monotonic()
            seconds[name] = round(seconds.get(name, 0.0) + now - clock, 3)
            clock = now

        gold, _ = gold_for(self.config, self.db, spec)
        lap("harness_gold")
        snapshot = index.index_commit(self.db, spec.repo, spec.parent, package_id=spec.package_id)
        builder = ContextBuilder(
            self.db,
            snapshot,
            lambda text: self.pool.count_tokens(STAGE_ROLES["scope"], text),
        )
        lap("indexing")
        settings = self.config.settings.campaign
        result = run_pipeline(
            self.pool,
            builder,
            spec.message,
            settings=StageSettings(
                temperature=unit.temperature,
                seed=unit.seed,
                max_tokens=settings.max_tokens,
                context_tokens=settings.context_tokens,
            ),
            adapters=resolver(self.config, self.db),  # each stage's active version, now
        )
        lap("model_calls")
        real = truth.commit_truth(spec)
        if unit.sample == 0 or not _has_pairs(self.db, spec):
            candidates = builder.candidates(spec.message, hints=real.files)
            symbol_ids = [
                f"{s.path}::{s.qualname}"
                for s in index.symbols(self.db, snapshot.id, [p for p, _ in candidates])
            ]
            store.record_pairs(
                self.db,
                spec.package_id,
                spec.sha,
                truth.synthetic_pairs(spec, real, candidates, symbol_ids, set(builder.files)),
            )
        if not result.edits:
            outcome, reason, grading, diff, changed = "not_applied", "no edits", {}, "", ()
            code = result.stages.get("code")
            if code is not None and code.error:
                reason = f"the code stage gave no edits ({code.error})"
            else:
                reason = "the code stage gave no edits"
        else:
            verdict = grade_patch(self.config, spec, gold, "search_replace", result.edits)
            outcome, reason = verdict.verdict, verdict.reason
            grading, diff, changed = verdict.to_dict(), verdict.diff, verdict.changed
        lap("sandbox")
        before = {
            p: index.file_text(self.db, snapshot.id, p) for p in changed if p in builder.files
        }
        aligned = truth.alignment(
            real,
            (result.stages.get("plan").output if result.stages.get("plan") else None),
            changed,
            truth.symbols_of_diff(diff, before),
        )
        store.record_triple(
            self.db,
            spec.package_id,
            {
                "sha": spec.sha,
                "sample": unit.sample,
                "snapshot_sha": spec.parent,
                "temperature": unit.temperature,
                "seed": unit.seed,
                "stages": {name: r.to_dict() for name, r in result.stages.items()},
                "call_ids": result.call_ids,
                "edits": [e.__dict__ for e in result.edits],
                "diff": diff,
                "outcome": outcome,
                "reason": reason,
                "grading": grading,
                "alignment": aligned,
                "seconds": seconds,
            },
        )
        return UnitResult(unit.sha, unit.sample, outcome, reason, seconds)


def _has_pairs(db, spec: CommitSpec) -> bool:
    return bool(
        db.execute(
            "SELECT 1 FROM synthetic_pairs WHERE package_id = ? AND sha = ?",
            [spec.package_id, spec.sha],
        ).fetchone()
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
) -> Iterator[UnitResult]:
    """Plan the units still to do and run them; yields each unit's result as it ends.
    With `new`, `commits` counts commits not yet done (the next ones), not the first."""
    samples = samples or config.settings.campaign.samples
    units, usable = plan_units(config, db, package, commits=commits, samples=samples, new=new)
    if on_planned:
        on_planned(units, usable)
    executor = executor or LocalExecutor(config.settings.campaign.workers)
    yield from executor.run(units, _WorkerFactory(config))


class _WorkerFactory:
    """Picklable: each process of a process pool makes its own worker."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self) -> Worker:
        return Worker(self.config)
