"""Evaluation records: a run per (stage, adapter, example set), every per-example outcome,
and every gate decision with its report. An example's outcomes are written in one
transaction, so an interrupted run resumes where it stopped; a finished run of the same
adapter on the same examples and settings is reused, never recomputed."""

from __future__ import annotations

import json

from appliance.clock import now_iso
from appliance.store import transaction

# The tables eval_runs, eval_examples, eval_outcomes and gate_decisions: m009_evaluation in
# appliance/store/migrations.py.


def open_run(db, stage, adapter, adapter_sha, base_sha, examples_key, source, n) -> dict:
    """The run for these inputs: the finished or interrupted one, else a new one."""
    with transaction(db):
        db.execute(
            "INSERT OR IGNORE INTO eval_runs (stage, adapter, adapter_sha256, base_sha256, "
            "examples_key, source, examples, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?)",
            [stage, adapter, adapter_sha, base_sha, examples_key, source, n, now_iso()],
        )
    return next(
        db.query(
            "SELECT * FROM eval_runs WHERE stage = ? AND adapter_sha256 = ? AND base_sha256 = ? "
            "AND examples_key = ?",
            [stage, adapter_sha, base_sha, examples_key],
        )
    )


def done_examples(db, run_id: int) -> set[str]:
    rows = db.execute("SELECT example FROM eval_examples WHERE run_id = ?", [run_id])
    return {r[0] for r in rows}


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


def outcomes(db, run_id: int) -> list[tuple[str, str, str, float]]:
    return db.execute(
        "SELECT example, item, metric, value FROM eval_outcomes WHERE run_id = ? "
        "ORDER BY example, item, metric",
        [run_id],
    ).fetchall()


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
            return same[0]
        cursor = db.execute(
            "INSERT INTO gate_decisions (stage, candidate, baseline, candidate_run, "
            "baseline_run, verdict, report, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [stage, candidate, baseline, runs[0], runs[1], verdict, json.dumps(report), now_iso()],
        )
    return cursor.lastrowid


def decisions(db, stage: str | None = None, limit: int = 50) -> list[dict]:
    where, args = ("WHERE stage = ?", [stage]) if stage else ("", [])
    rows = db.query(
        f"SELECT * FROM gate_decisions {where} ORDER BY id DESC LIMIT ?", [*args, limit]
    )
    return [r | {"report": json.loads(r["report"])} for r in rows]
