"""Solve runs in the database: one row per `forge solve`, with the operator's feedback.

This module owns the table `solve_runs` (m018_solve_runs in appliance/store/migrations.py):
only its SQL names it, and a run crosses every border as the frozen `SolveRun`. A run is
recorded when its stages end (`record_run`); its test outcome, its application to the
operator's checkout and the feedback are added to it later, each in one statement. A
stage's answer is stored once, in the call log; the run keeps the call's id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import sqlite_utils

from appliance.campaign.store import StageRecord
from appliance.clock import now_iso
from appliance.errors import UsageError
from appliance.harness.edits import SearchReplace
from appliance.records import as_json, from_row
from appliance.store import transaction

OUTCOMES = ("diff", "no_diff")
VERDICTS = ("good", "bad")
OPERATOR_TASK = ":operator-"  # NAME@SNAPSHOT:operator-HASH names an operator task


@dataclass(frozen=True)
class SolveRun:
    """One `forge solve`: what the stages saw and answered, the diff, and what came after."""

    package_id: int
    package: str  # NAME-VERSION
    repo_path: str | None  # the operator's checkout; None: the package's own repository
    snapshot_sha: str
    contains: tuple[str, ...]  # the package's commits the snapshot is or descends from
    task: str
    stages: tuple[StageRecord, ...]
    edits: tuple[SearchReplace, ...]
    patch: str  # unified diff; "" when the code stage gave none that applies
    outcome: str  # diff | no_diff
    reason: str
    seconds: dict
    started_at: str
    finished_at: str
    test: dict | None = None  # solve.testing.TestOutcome.to_dict(); None: not tested
    tested_at: str | None = None
    applied_at: str | None = None
    feedback: str | None = None  # good | bad
    feedback_patch: str | None = None  # the operator's corrected patch (a unified diff)
    feedback_targets: dict | None = None  # stage -> {"input", "target"} the patch implies
    feedback_at: str | None = None
    id: int | None = None  # set by the store

    @property
    def call_ids(self) -> list[int]:
        return [s.call_id for s in self.stages if s.call_id is not None]

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.stage == name), None)

    def to_dict(self) -> dict:
        return as_json(self, "id", *(f for f in self.__dataclass_fields__ if f != "id"))


def task_key(package_name: str, snapshot: str, task: str) -> str:
    """The key of an operator task, "NAME@SNAPSHOT:operator-HASH": runs of the same task
    text on the same snapshot are one task (their rows may pair, and share a cap)."""
    digest = hashlib.sha256(" ".join(task.split()).encode()).hexdigest()[:12]
    return f"{package_name}@{snapshot}{OPERATOR_TASK}{digest}"


def is_operator_task(key: str) -> bool:
    return OPERATOR_TASK in key.rpartition("@")[2]


def record_run(db: sqlite_utils.Database, run: SolveRun) -> SolveRun:
    """Insert a finished run; returns it with its id."""
    with transaction(db) as conn:
        cursor = conn.execute(
            "INSERT INTO solve_runs (package_id, package, repo_path, snapshot_sha, contains, "
            "task, stages, call_ids, edits, patch, outcome, reason, seconds, started_at, "
            "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run.package_id, run.package, run.repo_path, run.snapshot_sha,
             json.dumps(list(run.contains)), run.task,
             json.dumps({s.stage: s.to_dict() for s in run.stages}), json.dumps(run.call_ids),
             json.dumps([e.__dict__ for e in run.edits]), run.patch, run.outcome, run.reason,
             json.dumps(run.seconds), run.started_at, run.finished_at],
        )  # fmt: skip
    return get(db, cursor.lastrowid)


def record_test(db: sqlite_utils.Database, run_id: int, outcome: dict) -> None:
    with transaction(db) as conn:
        conn.execute(
            "UPDATE solve_runs SET test = ?, tested_at = ? WHERE id = ?",
            [json.dumps(outcome), now_iso(), run_id],
        )


def record_applied(db: sqlite_utils.Database, run_id: int) -> None:
    with transaction(db) as conn:
        conn.execute("UPDATE solve_runs SET applied_at = ? WHERE id = ?", [now_iso(), run_id])


def record_feedback(
    db: sqlite_utils.Database,
    run_id: int,
    verdict: str,
    patch: str | None,
    targets: dict | None,
) -> SolveRun:
    """The operator's feedback on a run, replacing any given before (rows already in a
    dataset version stay there: versions only grow)."""
    if verdict not in VERDICTS:
        raise UsageError(f"unknown verdict {verdict!r}", "use good or bad")
    get(db, run_id)  # an unknown run is an error, not a silent no-op
    with transaction(db) as conn:
        conn.execute(
            "UPDATE solve_runs SET feedback = ?, feedback_patch = ?, feedback_targets = ?, "
            "feedback_at = ? WHERE id = ?",
            [
                verdict,
                patch,
                json.dumps(targets) if targets is not None else None,
                now_iso(),
                run_id,
            ],
        )
    return get(db, run_id)


_COLUMNS = (
    "id, package_id, package, repo_path, snapshot_sha, contains, task, stages, edits, patch, "
    "outcome, reason, seconds, started_at, finished_at, test, tested_at, applied_at, feedback, "
    "feedback_patch, feedback_targets, feedback_at"
)


def referenced_call_ids(db: sqlite_utils.Database) -> set[int]:
    """The model calls the operator's runs refer to (feedback turns them into rows)."""
    rows = db.execute(
        "SELECT DISTINCT j.value FROM solve_runs, json_each(solve_runs.call_ids) AS j"
    )
    return {int(value) for (value,) in rows if value is not None}


def _select(db: sqlite_utils.Database, where: str = "", args: list | None = None) -> list[SolveRun]:
    cursor = db.execute(f"SELECT {_COLUMNS} FROM solve_runs {where}", args or [])
    names = [c[0] for c in cursor.description]
    return [_run(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def _run(row: dict) -> SolveRun:
    return from_row(
        SolveRun,
        row,
        json_columns=("seconds", "test", "feedback_targets"),
        contains=tuple(json.loads(row["contains"])),
        stages=tuple(StageRecord.from_dict(s) for s in json.loads(row["stages"]).values()),
        edits=tuple(SearchReplace(**e) for e in json.loads(row["edits"])),
    )


def get(db: sqlite_utils.Database, run_id: int) -> SolveRun:
    """Run `run_id`; UsageError naming what exists when there is no such run."""
    found = _select(db, "WHERE id = ?", [run_id])
    if not found:
        (count,) = db.execute("SELECT COUNT(*) FROM solve_runs").fetchone()
        raise UsageError(
            f"no solve run {run_id}",
            f"forge runs list shows the {count} recorded"
            if count
            else "no run is recorded yet: forge solve --package NAME 'task' makes one",
        )
    return found[0]


def runs(
    db: sqlite_utils.Database, *, package_id: int | None = None, limit: int | None = None
) -> list[SolveRun]:
    """Recorded runs, newest first (of one package when `package_id` is given)."""
    where, args = ("WHERE package_id = ?", [package_id]) if package_id is not None else ("", [])
    tail = f" LIMIT {int(limit)}" if limit is not None else ""
    return _select(db, f"{where} ORDER BY id DESC{tail}", args)


def with_feedback(db: sqlite_utils.Database) -> list[SolveRun]:
    """The runs the operator gave feedback on, oldest first (what datasets are made from)."""
    return _select(db, "WHERE feedback IS NOT NULL ORDER BY id")
