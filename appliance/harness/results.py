"""Harness results in the database: gold grading per commit, and graded patches.

A gold result is reused while its inputs are unchanged (the package's manifest, the
number of gold runs, the harness version); results of infrastructure failures are
always recomputed, since they say nothing about the commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime

import sqlite_utils

from appliance.config import Config
from appliance.harness.grading import GoldResult, PatchVerdict, grade_gold
from appliance.harness.spec import CommitSpec
from appliance.store import transaction

HARNESS_VERSION = 1  # bump when grading changes in a way that invalidates stored results


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def inputs_key(config: Config, spec: CommitSpec) -> str:
    data = [
        HARNESS_VERSION,
        spec.manifest_sha256,
        spec.sha,
        config.settings.harness.gold_runs,
        list(spec.test_command),
    ]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:24]


def stored_gold(db: sqlite_utils.Database, spec: CommitSpec, key: str) -> GoldResult | None:
    row = next(
        db.query(
            "SELECT * FROM gold_results WHERE package_id = ? AND sha = ? AND inputs_key = ? "
            "AND status = 'ok'",
            [spec.package_id, spec.sha, key],
        ),
        None,
    )
    if row is None:
        return None
    return GoldResult(
        sha=row["sha"],
        status=row["status"],
        usable=bool(row["usable"]),
        reason=row["reason"],
        fail_to_pass=tuple(json.loads(row["fail_to_pass"])),
        pass_to_pass=tuple(json.loads(row["pass_to_pass"])),
        flaky=tuple(json.loads(row["flaky"])),
        runs=tuple(json.loads(row["runs"])),
        duration_s=row["duration_s"],
    )


def save_gold(db: sqlite_utils.Database, spec: CommitSpec, key: str, result: GoldResult) -> None:
    with transaction(db):
        db.execute(
            "DELETE FROM gold_results WHERE package_id = ? AND sha = ?",
            [spec.package_id, spec.sha],
        )
        db.execute(
            "INSERT INTO gold_results (package_id, sha, inputs_key, status, usable, reason, "
            "fail_to_pass, pass_to_pass, flaky, runs, duration_s, graded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                spec.package_id,
                spec.sha,
                key,
                result.status,
                int(result.usable),
                result.reason,
                json.dumps(list(result.fail_to_pass)),
                json.dumps(list(result.pass_to_pass)),
                json.dumps(list(result.flaky)),
                json.dumps(list(result.runs)),
                result.duration_s,
                _now(),
            ],
        )


def gold_for(
    config: Config,
    db: sqlite_utils.Database,
    spec: CommitSpec,
    *,
    force: bool = False,
    on_run: Callable | None = None,
) -> tuple[GoldResult, bool]:
    """The commit's gold result and whether it was reused from the database."""
    key = inputs_key(config, spec)
    if not force and (known := stored_gold(db, spec, key)) is not None:
        return known, True
    result = grade_gold(config, spec, on_run=on_run)
    save_gold(db, spec, key, result)
    return result, False


def save_patch(
    db: sqlite_utils.Database, spec: CommitSpec, patch: bytes, verdict: PatchVerdict
) -> int:
    with transaction(db) as conn:
        cursor = conn.execute(
            "INSERT INTO patch_gradings (package_id, sha, patch_sha256, verdict, reason, "
            "result, diff, graded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                spec.package_id,
                spec.sha,
                hashlib.sha256(patch).hexdigest(),
                verdict.verdict,
                verdict.reason,
                json.dumps(verdict.to_dict()),
                verdict.diff,
                _now(),
            ],
        )
        return cursor.lastrowid
