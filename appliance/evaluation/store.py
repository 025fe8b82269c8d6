"""Evaluation records: a run per (stage, adapter, example set), every per-example outcome,
and every gate decision with its report. An example's outcomes are written in one
transaction, so an interrupted run resumes where it stopped; a finished run of the same
adapter on the same examples and settings is reused, never recomputed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from appliance.clock import now_iso
from appliance.records import as_json, from_row
from appliance.store import transaction

# The tables eval_runs, eval_examples, eval_outcomes and gate_decisions: m009_evaluation in
# appliance/store/migrations.py.


@dataclass(frozen=True)
class StoredRun:
    """An `eval_runs` row: one arm evaluated on one example set."""

    id: int
    stage: str
    adapter: str  # 'scope-v2', or 'base'
    adapter_sha256: str
    base_sha256: str
    examples_key: str
    source: str
    examples: int
    status: str  # running | done
    summary: dict | None  # metric -> {value, n}, once done
    created_at: str
    finished_at: str | None

    @classmethod
    def from_row(cls, row: Mapping) -> StoredRun:
        return from_row(cls, row, json_columns=("summary",))


@dataclass(frozen=True)
class StoredOutcome:
    """One metric's value for one item of one example of a run."""

    example: str
    item: str  # "" for a per-example metric
    metric: str
    value: float


@dataclass(frozen=True)
class StoredDecision:
    """A `gate_decisions` row with its report."""

    id: int
    stage: str
    candidate: str  # scope-v3
    baseline: str  # scope-v2, or 'base'
    candidate_run: int | None
    baseline_run: int | None
    verdict: str  # promote | reject
    report: dict  # the gate's decision, its metrics, the example source
    created_at: str

    @classmethod
    def from_row(cls, row: Mapping) -> StoredDecision:
        return from_row(cls, row, json_columns=("report",))

    def to_dict(self) -> dict:
        """As `forge decisions --json` prints it: the table's columns, in its order."""
        return as_json(self)


def open_run(db, stage, adapter, adapter_sha, base_sha, examples_key, source, n) -> StoredRun:
    """The run for these inputs: the finished or interrupted one, else a new one."""
    with transaction(db):
        db.execute(
            "INSERT OR IGNORE INTO eval_runs (stage, adapter, adapter_sha256, base_sha256, "
            "examples_key, source, examples, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            [stage, adapter, adapter_sha, base_sha, examples_key, source, n, now_iso()],
        )
    row = next(
        db.query(
            "SELECT * FROM eval_runs WHERE stage = ? AND adapter_sha256 = ? AND base_sha256 = ? "
            "AND examples_key = ?",
            [stage, adapter_sha, base_sha, examples_key],
        )
    )
    return StoredRun.from_row(row)


def done_examples(db, run_id: int) -> set[str]:
    rows = db.execute("SELECT example FROM eval_examples WHERE run_id = ?", [run_id])
    return {example for (example,) in rows}


def record_example(db, run_id: int, example: str, answer: str, detail: dict, outcomes) -> None:
    with transaction(db):
        db.execute(
            "INSERT INTO eval_examples (run_id, example, answer, detail) VALUES (?, ?, ?, ?)",
            [run_id, example, answer, json.dumps(detail)],
        )
        db.conn.executemany(
            "INSERT INTO eval_outcomes (run_id, example, item, metric, value) VALUES (?,?,?,?,?)",
            [(run_id, example, o.item, o.metric, o.value) for o in outcomes],
        )


def outcomes(db, run_id: int) -> list[StoredOutcome]:
    rows = db.query(
        "SELECT example, item, metric, value FROM eval_outcomes WHERE run_id = ? "
        "ORDER BY example, item, metric",
        [run_id],
    )
    return [StoredOutcome(**row) for row in rows]


def finish_run(db, run_id: int, summary: dict) -> None:
    with transaction(db):
        db.execute(
            "UPDATE eval_runs SET status = 'done', summary = ?, finished_at = ? WHERE id = ?",
            [json.dumps(summary), now_iso(), run_id],
        )


def record_decision(db, stage, candidate, baseline, runs, verdict, report: dict) -> int:
    """Store a decision; the same verdict on the same two runs is the decision already
    stored (a cycle killed between deciding and promoting decides once, not twice)."""
    with transaction(db):
        same = db.execute(
            "SELECT id FROM gate_decisions WHERE stage = ? AND candidate = ? AND baseline = ? "
            "AND candidate_run = ? AND baseline_run = ? AND verdict = ?",
            [stage, candidate, baseline, runs[0], runs[1], verdict],
        ).fetchone()
        if same:
            (decision_id,) = same
            return decision_id
        cursor = db.execute(
            "INSERT INTO gate_decisions (stage, candidate, baseline, candidate_run, "
            "baseline_run, verdict, report, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [stage, candidate, baseline, runs[0], runs[1], verdict, json.dumps(report), now_iso()],
        )
    return cursor.lastrowid


def decisions(db, stage: str | None = None, limit: int = 50) -> list[StoredDecision]:
    """The stored decisions (of `stage`), newest first."""
    where, args = ("WHERE stage = ?", [stage]) if stage else ("", [])
    rows = db.query(
        f"SELECT * FROM gate_decisions {where} ORDER BY id DESC LIMIT ?", [*args, limit]
    )
    return [StoredDecision.from_row(row) for row in rows]


def referenced_call_ids(db) -> set[int]:
    """The model calls evaluation examples were answered with (and, for plan, the code
    stage's call that turned the plan into edits)."""
    rows = db.execute(
        "SELECT json_extract(detail, '$.call_id'), json_extract(detail, '$.code_call_id') "
        "FROM eval_examples"
    )
    return {int(value) for row in rows for value in row if value is not None}


def verdict_counts(db) -> dict[str, int]:
    """The gate's stored decisions, by verdict."""
    return dict(
        db.execute("SELECT verdict, COUNT(*) FROM gate_decisions GROUP BY verdict").fetchall()
    )
