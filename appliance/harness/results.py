"""Harness results in the database: gold grading per commit, and graded patches.

A gold result is reused while its inputs are unchanged (the package's manifest, the
number of gold runs, the harness version); results of infrastructure failures are
always recomputed, since they say nothing about the commit.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import sqlite_utils

from appliance.clock import now_iso
from appliance.config import Config
from appliance.harness.grading import GoldResult, PatchVerdict, grade_gold
from appliance.harness.spec import CommitSpec
from appliance.store import transaction

# Bump when grading changes in a way that invalidates stored results. 2: the result
# stream is cross-checked; results before it trusted a report the tested code could rewrite.
HARNESS_VERSION = 2


@dataclass(frozen=True)
class GoldCounts:
    """How many of a package's commits are gold-graded, usable, and failed on
    infrastructure."""

    graded: int = 0
    usable: int = 0
    infra: int = 0


def gold_counts(db: sqlite_utils.Database) -> dict[int, GoldCounts]:
    """package id → its gold counts (packages without a gold result are left out)."""
    return {
        package_id: GoldCounts(graded, usable, infra)
        for package_id, graded, usable, infra in db.execute(
            "SELECT package_id, COUNT(*), COUNT(*) FILTER (WHERE usable), "
            "COUNT(*) FILTER (WHERE status = 'infra') FROM gold_results GROUP BY package_id"
        ).fetchall()
    }


def gold_usable(db: sqlite_utils.Database, package_id: int) -> dict[str, bool]:
    """sha → whether the commit's gold result is usable, for the package's graded commits."""
    return {
        sha: bool(usable)
        for sha, usable in db.execute(
            "SELECT sha, usable FROM gold_results WHERE package_id = ?", [package_id]
        ).fetchall()
    }


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
                now_iso(),
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
    """The commit's gold result and whether it was reused from the database. An
    infrastructure failure is not reused: it says nothing about the commit, and what
    failed (an environment, the sandbox) may work now."""
    key = inputs_key(config, spec)
    known = None if force else stored_gold(db, spec, key)
    if known is not None and known.status != "infra":
        return known, True
    result = grade_gold(config, spec, on_run=on_run)
    save_gold(db, spec, key, result)
    return result, False


def grade_commits(
    config: Config,
    db: sqlite_utils.Database,
    specs: list[CommitSpec],
    *,
    force: bool = False,
    jobs: int = 1,
    on_run: Callable[[CommitSpec, str, object], None] | None = None,
) -> Iterator[tuple[CommitSpec, GoldResult, bool]]:
    """Gold results for `specs` as they become known: stored ones first, then graded ones,
    `jobs` at a time. Yields (spec, result, reused); results are saved as they finish."""
    pending = []
    for spec in specs:
        key = inputs_key(config, spec)
        known = None if force else stored_gold(db, spec, key)
        if known is not None:
            yield spec, known, True
        else:
            pending.append((spec, key))

    def grade(spec: CommitSpec) -> GoldResult:
        hook = functools.partial(on_run, spec) if on_run else None
        return grade_gold(config, spec, on_run=hook)

    if jobs <= 1:  # in this thread, so Ctrl-C stops at once
        for spec, key in pending:
            result = grade(spec)
            save_gold(db, spec, key, result)
            yield spec, result, False
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade, spec): (spec, key) for spec, key in pending}
        try:
            for future in as_completed(futures):
                spec, key = futures[future]
                result = future.result()
                save_gold(db, spec, key, result)
                yield spec, result, False
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


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
                now_iso(),
            ],
        )
        return cursor.lastrowid
