"""Campaign records in the database: triples (one per package, commit, sample) and the
synthetic pairs per commit and stage. A unit is recorded in one transaction when it is
complete, and the unique keys make a repeated record impossible.

This module owns the tables `triples` and `synthetic_pairs` (m005_campaigns,
m012_tampered_verdict and m014_answers_in_the_call_log in appliance/store/migrations.py):
only its SQL names them, and they cross every border as the frozen records below.
A stage's answer is stored once, in the call log (`model_calls.output`, read with
appliance.serving.calllog); the triple keeps the call's id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from appliance.clock import now_iso
from appliance.harness.edits import SearchReplace
from appliance.records import as_json, from_row
from appliance.store import transaction

OUTCOMES = ("resolved", "failed", "not_applied", "tampered", "infra")


@dataclass(frozen=True)
class StageRecord:
    """One stage of a triple: its parsed output, the call that answered (the answer itself
    is that call's output in the call log), its adapter, its error and its context."""

    stage: str
    output: dict | None
    call_id: int | None
    adapter: str | None
    error: str | None
    context: dict  # the ContextPackage as stored (ContextPackage.to_dict())

    def to_dict(self) -> dict:
        return as_json(self)

    @classmethod
    def from_dict(cls, data: dict) -> StageRecord:
        # Rows from before m014 whose call was never logged still hold a "raw" answer;
        # nothing reads it.
        return cls(
            data["stage"],
            data.get("output"),
            data.get("call_id"),
            data.get("adapter"),
            data.get("error"),
            data.get("context", {}),
        )


@dataclass(frozen=True)
class Triple:
    """One sample of one commit: the five stages, the graded edits, the alignment."""

    package_id: int
    sha: str
    sample: int
    snapshot_sha: str  # the parent commit: all the stages could see
    temperature: float
    seed: int
    stages: tuple[StageRecord, ...]
    edits: tuple[SearchReplace, ...]
    diff: str
    outcome: str  # one of OUTCOMES
    reason: str
    grading: dict  # the graded run's verdict as PatchVerdict.to_dict() gives it; {} if none
    alignment: dict  # truth.alignment: plan and edits against the real commit
    seconds: dict  # phase -> seconds
    created_at: str = ""  # set by the store

    @property
    def call_ids(self) -> list[int]:
        return [s.call_id for s in self.stages if s.call_id is not None]

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.stage == name), None)


@dataclass(frozen=True)
class SyntheticPair:
    """What the real commit says one stage should answer, given its input."""

    package_id: int
    sha: str
    stage: str
    input: dict
    target: dict


def done_units(db: sqlite_utils.Database, package_id: int) -> set[tuple[str, int]]:
    return {
        (sha, sample)
        for sha, sample in db.execute(
            "SELECT sha, sample FROM triples WHERE package_id = ?", [package_id]
        ).fetchall()
    }


def record_triple(db: sqlite_utils.Database, triple: Triple) -> bool:
    """Insert one triple; False when (package, commit, sample) was already recorded."""
    with transaction(db) as conn:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO triples (package_id, sha, sample, snapshot_sha, temperature, "
            "seed, stages, call_ids, edits, diff, outcome, reason, grading, alignment, seconds, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                triple.package_id,
                triple.sha,
                triple.sample,
                triple.snapshot_sha,
                triple.temperature,
                triple.seed,
                json.dumps({s.stage: s.to_dict() for s in triple.stages}),
                json.dumps(triple.call_ids),
                json.dumps([e.__dict__ for e in triple.edits]),
                triple.diff,
                triple.outcome,
                triple.reason,
                json.dumps(triple.grading),
                json.dumps(triple.alignment),
                json.dumps(triple.seconds),
                now_iso(),
            ],
        )
        return cursor.rowcount == 1


_TRIPLE_COLUMNS = (
    "package_id, sha, sample, snapshot_sha, temperature, seed, stages, edits, diff, outcome, "
    "reason, grading, alignment, seconds, created_at"
)


def triples(db: sqlite_utils.Database, package_id: int, sha: str | None = None) -> list[Triple]:
    """The package's triples (of one commit with `sha`), by commit and sample."""
    where, args = ("package_id = ?", [package_id])
    if sha is not None:
        where, args = (f"{where} AND sha = ?", [*args, sha])
    cursor = db.execute(
        f"SELECT {_TRIPLE_COLUMNS} FROM triples WHERE {where} ORDER BY sha, sample", args
    )
    names = [c[0] for c in cursor.description]
    return [_triple(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]


def _triple(row: dict) -> Triple:
    return from_row(
        Triple,
        row,
        json_columns=("grading", "alignment", "seconds"),
        stages=tuple(StageRecord.from_dict(s) for s in json.loads(row["stages"]).values()),
        edits=tuple(SearchReplace(**e) for e in json.loads(row["edits"])),
    )


def outcomes_by_commit(db: sqlite_utils.Database, package_id: int) -> dict[str, dict[str, int]]:
    """sha -> outcome -> triples, for the package's commits with at least one triple."""
    found: dict[str, dict[str, int]] = {}
    for sha, outcome, count in db.execute(
        "SELECT sha, outcome, COUNT(*) FROM triples WHERE package_id = ? GROUP BY sha, outcome",
        [package_id],
    ).fetchall():
        found.setdefault(sha, {})[outcome] = count
    return found


def record_pairs(db: sqlite_utils.Database, pairs: Iterable[SyntheticPair]) -> int:
    """Insert a commit's synthetic pairs; existing ones stay. Returns how many were new."""
    added = 0
    with transaction(db) as conn:
        for pair in pairs:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO synthetic_pairs (package_id, sha, stage, input, target, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [pair.package_id, pair.sha, pair.stage, json.dumps(pair.input),
                 json.dumps(pair.target), now_iso()],
            )  # fmt: skip
            added += cursor.rowcount
    return added


def has_pairs(db: sqlite_utils.Database, package_id: int, sha: str) -> bool:
    found = db.execute(
        "SELECT 1 FROM synthetic_pairs WHERE package_id = ? AND sha = ?", [package_id, sha]
    ).fetchone()
    return found is not None


def synthetic_pair(
    db: sqlite_utils.Database, package_id: int, sha: str, stage: str
) -> SyntheticPair | None:
    found = db.execute(
        "SELECT input, target FROM synthetic_pairs WHERE package_id = ? AND sha = ? AND stage = ?",
        [package_id, sha, stage],
    ).fetchone()
    if found is None:
        return None
    given, target = found
    return SyntheticPair(package_id, sha, stage, json.loads(given), json.loads(target))


@dataclass(frozen=True)
class CampaignState:
    """A package's campaign so far: what `forge campaign show` and the dashboard show."""

    commits: int  # commits with at least one triple
    triples: int
    resolved_rate: float | None  # of the graded triples (infra left out); None if none
    outcomes: dict[str, int]  # every outcome of OUTCOMES, in that order
    stage_calls: dict[str, int]  # stage -> triples with a logged call for it
    synthetic_pairs: int

    def to_dict(self) -> dict:
        return as_json(self)


def summary(db: sqlite_utils.Database, package_id: int) -> CampaignState:
    rows = db.execute(
        "SELECT sha, outcome, stages FROM triples WHERE package_id = ?", [package_id]
    ).fetchall()
    outcomes = dict.fromkeys(OUTCOMES, 0)
    calls: dict[str, int] = {}
    for _, outcome, stages in rows:
        outcomes[outcome] += 1
        for stage, result in json.loads(stages).items():
            if result.get("call_id") is not None:
                calls[stage] = calls.get(stage, 0) + 1
    (pairs,) = db.execute(
        "SELECT COUNT(*) FROM synthetic_pairs WHERE package_id = ?", [package_id]
    ).fetchone()
    graded = len(rows) - outcomes["infra"]
    return CampaignState(
        commits=len({sha for sha, _, _ in rows}),
        triples=len(rows),
        resolved_rate=outcomes["resolved"] / graded if graded else None,
        outcomes=outcomes,
        stage_calls=calls,
        synthetic_pairs=pairs,
    )


def referenced_call_ids(db: sqlite_utils.Database) -> set[int]:
    """The model calls the triples refer to (a stage's answer lives only in its call)."""
    rows = db.execute("SELECT DISTINCT j.value FROM triples, json_each(triples.call_ids) AS j")
    return {int(value) for (value,) in rows if value is not None}


def outcome_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Campaign samples (triples) recorded so far, by outcome."""
    return dict(db.execute("SELECT outcome, COUNT(*) FROM triples GROUP BY outcome").fetchall())
