"""`forge solve`: index the repository, run the five stages on the operator's task with
each stage's active adapter, turn the code stage's edits into a unified diff, record the
run, and optionally test the diff in the sandbox or apply it to the operator's checkout.

The stages get their context exactly as a campaign builds it (`stages.context`, from the
index of one snapshot), and the model calls are logged like every other. Decoding is
deterministic (temperature 0, a fixed seed): the same task on the same snapshot with the
same adapters gives the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from appliance import index
from appliance.campaign.store import StageRecord
from appliance.clock import now_iso
from appliance.config import Config
from appliance.errors import UsageError
from appliance.harness.checkout import worktree
from appliance.harness.edits import EditNotApplied, apply_edits, diff_of
from appliance.registry import resolver
from appliance.serving.calllog import SOLVED
from appliance.serving.pool import ModelPool
from appliance.solve import runs, source, testing
from appliance.solve.runs import SolveRun
from appliance.solve.source import Source
from appliance.stages import STAGE_ROLES
from appliance.stages.context import ContextBuilder
from appliance.stages.pipeline import PipelineResult, StageSettings, run_pipeline

SEED = 0
MAX_TASK_CHARS = 4000  # the task text goes into every stage's prompt

Progress = Callable[[str], None]


def check_task(task: str) -> str:
    text = task.strip()
    if not text:
        raise UsageError("the task is empty", 'say what to do: forge solve --package NAME "task"')
    if len(text) > MAX_TASK_CHARS:
        raise UsageError(
            f"the task is {len(text)} characters long; at most {MAX_TASK_CHARS} fit the prompts",
            "say it shorter: the stages find the code themselves",
        )
    return text


def solve(
    config: Config,
    db: sqlite_utils.Database,
    package: str,
    task: str,
    *,
    repo_path: Path | None = None,
    test: bool = False,
    pool: ModelPool | None = None,
    on_progress: Progress | None = None,
) -> SolveRun:
    """Run the five stages on `task` over the package's newest commit, or the commit
    checked out at `repo_path`; record the run (and, with `test`, its test outcome)."""
    say = on_progress or (lambda text: None)
    task = check_task(task)
    started, clock, seconds = now_iso(), time.monotonic(), {}
    found = (
        source.checkout_source(config, db, package, repo_path)
        if repo_path is not None
        else source.package_source(config, db, package)
    )
    where = f"indexing {found.snapshot[:12]}"
    say(where)
    snapshot = index.index_commit(
        db, found.git_dir, found.snapshot, package_id=found.package.id,
        on_progress=lambda done, total: say(f"{where}: {done}/{total} new files"),
    )  # fmt: skip
    seconds["indexing"], clock = round(time.monotonic() - clock, 3), time.monotonic()
    own_pool = pool is None
    pool = pool or ModelPool.from_config(config, source=SOLVED)
    try:
        result = _stages(config, db, pool, snapshot, task, say)
    finally:
        if own_pool:
            pool.close()
    seconds["model_calls"], clock = round(time.monotonic() - clock, 3), time.monotonic()
    patch, reason = _diff(config, found, result)
    run = runs.record_run(db, _run(found, task, result, patch, reason, seconds, started))
    if test and run.patch:
        say("testing the diff")
        spec = source.spec_for(config, db, found, task)
        outcome = testing.test_patch(config, spec, run.patch, say)
        runs.record_test(db, run.id, outcome.to_dict())
        run = runs.get(db, run.id)
    return run


def _stages(config: Config, db, pool: ModelPool, snapshot, task: str, say: Progress):
    builder = ContextBuilder(
        db, snapshot, lambda text: pool.count_tokens(STAGE_ROLES["scope"], text)
    )
    settings = config.settings.campaign
    return run_pipeline(
        pool,
        builder,
        task,
        settings=StageSettings(
            temperature=0.0,
            seed=SEED,
            max_tokens=settings.max_tokens,
            context_tokens=settings.context_tokens,
        ),
        adapters=resolver(config, db),  # each stage's active version, now
        on_stage=lambda stage: say(f"stage {stage.replace('_', ' ')}"),
    )


def _diff(config: Config, found: Source, result: PipelineResult) -> tuple[str, str]:
    """(the code stage's edits as a unified diff against the snapshot, why); "" when none."""
    if not result.edits:
        code = result.stages.get("code")
        if code is not None and code.error:
            return "", f"the code stage gave no edits ({code.error})"
        return "", "the code stage gave no edits"
    with worktree(config, found.git_dir, found.snapshot, label="solve-diff") as work:
        try:
            changed = apply_edits(work / "repo", "search_replace", result.edits)
        except EditNotApplied as exc:
            return "", f"the code stage's edits do not apply: {exc.message}"
        patch = diff_of(work / "repo")
    if not patch.strip():
        return "", "the code stage's edits change nothing"
    return patch, f"{len(changed)} file(s) changed: {', '.join(changed)}"


def _run(found: Source, task, result: PipelineResult, patch, reason, seconds, started) -> SolveRun:
    return SolveRun(
        package_id=found.package.id,
        package=found.package.label,
        repo_path=str(found.checkout) if found.checkout is not None else None,
        snapshot_sha=found.snapshot,
        contains=found.contains,
        task=task,
        stages=tuple(
            StageRecord(r.stage, r.output, r.call_id, r.adapter, r.error, r.context.to_dict())
            for r in result.stages.values()
        ),
        edits=tuple(result.edits),
        patch=patch,
        outcome="diff" if patch else "no_diff",
        reason=reason,
        seconds=seconds,
        started_at=started,
        finished_at=now_iso(),
    )


def apply_run(db: sqlite_utils.Database, run: SolveRun) -> list[str]:
    """Apply a run's diff to the operator's checkout it was made from (clean only)."""
    if run.repo_path is None:
        raise UsageError(
            f"run {run.id} was made on the package's own repository: there is no checkout "
            "to apply it to",
            "solve with --repo PATH to apply, or take the diff: forge runs show RUN --json",
        )
    if not run.patch:
        raise UsageError(f"run {run.id} produced no diff: nothing to apply")
    changed = source.apply_patch(source.toplevel(Path(run.repo_path)), run.patch)
    runs.record_applied(db, run.id)
    return changed
