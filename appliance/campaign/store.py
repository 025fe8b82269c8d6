"""Campaign records in the database: triples (one per package, commit, sample) and the
synthetic pairs per commit and stage. A unit is recorded in one transaction when it is
complete, and the unique keys make a repeated record impossible."""

from __future__ import annotations

import json

import sqlite_utils

from appliance.clock import now_iso
from appliance.store import transaction

# The tables triples and synthetic_pairs: m005_campaigns and m012_tampered_verdict in
# appliance/store/migrations.py.


def done_units(db: sqlite_utils.Database, package_id: int) -> set[tuple[str, int]]:
    return {
        (row[0], row[1])
        for row in db.execute(
            "SELECT sha, sample FROM triples WHERE package_id = ?", [package_id]
        ).fetchall()
    }


def record_triple(db: sqlite_utils.Database, package_id: int, triple: dict) -> bool:
    """Insert one triple; False when (package, commit, sample) was already recorded."""
    with transaction(db) as conn:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO triples (package_id, sha, sample, snapshot_sha, temperature, "
            "seed, stages, call_ids, edits, diff, outcome, reason, grading, alignment, seconds, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                package_id,
                triple["sha"],
                triple["sample"],
                triple["snapshot_sha"],
                triple["temperature"],
                triple["seed"],
                json.dumps(triple["stages"]),
                json.dumps(triple["call_ids"]),
                json.dumps(triple["edits"]),
                triple["diff"],
                triple["outcome"],
                triple["reason"],
                json.dumps(triple["grading"]),
                json.dumps(triple["alignment"]),
                json.dumps(triple["seconds"]),
                now_iso(),
            ],
        )
        return cursor.rowcount == 1


def record_pairs(db: sqlite_utils.Database, package_id: int, sha: str, pairs: dict) -> int:
    """Insert the commit's synthetic pairs (stage -> (input, target)); existing ones stay."""
    added = 0
    with transaction(db) as conn:
        for stage, (given, target) in pairs.items():
            cursor = conn.execute(
                "INSERT OR IGNORE INTO synthetic_pairs (package_id, sha, stage, input, target, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [package_id, sha, stage, json.dumps(given), json.dumps(target), now_iso()],
            )
            added += cursor.rowcount
    return added


def summary(db: sqlite_utils.Database, package_id: int) -> dict:
    rows = db.execute(
        "SELECT sha, outcome, stages FROM triples WHERE package_id = ?", [package_id]
    ).fetchall()
    outcomes = dict.fromkeys(("resolved", "failed", "not_applied", "tampered", "infra"), 0)
    calls: dict[str, int] = {}
    for _, outcome, stages in rows:
        outcomes[outcome] += 1
        for stage, result in json.loads(stages).items():
            if result.get("call_id") is not None:
                calls[stage] = calls.get(stage, 0) + 1
    pairs = db.execute(
        "SELECT COUNT(*) FROM synthetic_pairs WHERE package_id = ?", [package_id]
    ).fetchone()[0]
    graded = len(rows) - outcomes["infra"]
    return {
        "commits": len({row[0] for row in rows}),
        "triples": len(rows),
        "resolved_rate": outcomes["resolved"] / graded if graded else None,
        "outcomes": outcomes,
        "stage_calls": calls,
        "synthetic_pairs": pairs,
    }
