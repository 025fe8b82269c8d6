"""The job queue in the database: what the daemon runs, with its lifecycle.

queued → running → done | failed | cancelled. A job that fails is queued again after an
exponential backoff until it has used its attempts; then it is failed, with the error.
Claiming is one transaction, so two workers never take the same job, and at most one
heavy job (campaign, training, evaluation: the ones that load a model) runs at a time.
A job key (e.g. "cycle") allows at most one live job per key. Jobs left running by a
crash are queued again on start, and resume from their own checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from appliance.clock import now_iso
from appliance.errors import UsageError
from appliance.records import as_json
from appliance.store import transaction

STATUSES = ("queued", "running", "done", "failed", "cancelled")
LIVE = ("queued", "running")
BACKOFF_S = 60  # the first retry waits this long, each later one twice as long

# The table jobs: m010_jobs and m011_job_results in appliance/store/migrations.py.


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    args: dict
    key: str | None
    heavy: bool
    status: str
    attempts: int
    max_attempts: int
    not_before: str
    queued_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    log: str | None
    progress: dict
    result: dict | None = None

    def to_dict(self) -> dict:
        return as_json(self)


def _job(row: dict) -> Job:
    return Job(
        row["id"], row["kind"], json.loads(row["args"]), row["key"], bool(row["heavy"]),
        row["status"], row["attempts"], row["max_attempts"], row["not_before"],
        row["queued_at"], row["started_at"], row["finished_at"], row["error"], row["log"],
        json.loads(row["progress"]), json.loads(row["result"]) if row.get("result") else None,
    )  # fmt: skip


def get(db, job_id: int) -> Job:
    rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
    if not rows:
        raise UsageError(f"no job {job_id}", "forge status lists the jobs")
    return _job(rows[0])


def jobs(db, statuses=STATUSES, limit: int = 50) -> list[Job]:
    marks = ",".join("?" * len(statuses))
    rows = db.query(
        f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY id DESC LIMIT ?",
        [*statuses, limit],
    )
    return [_job(r) for r in rows]


def enqueue(
    db,
    kind: str,
    args: dict | None = None,
    *,
    key: str | None = None,
    heavy: bool = False,
    max_attempts: int = 3,
    now: datetime | None = None,
) -> tuple[Job, bool]:
    """Queue a job; with a key that has a live job already, that one is returned instead.
    Returns (the job, whether it was queued now)."""
    with transaction(db):
        if key is not None:
            sql = "SELECT * FROM jobs WHERE key = ? AND status IN ('queued', 'running')"
            live = list(db.query(sql, [key]))
            if live:
                return _job(live[0]), False
        cursor = db.execute(
            "INSERT INTO jobs (kind, args, key, heavy, max_attempts, not_before, queued_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                kind,
                json.dumps(args or {}),
                key,
                int(heavy),
                max_attempts,
                now_iso(at=now),
                now_iso(at=now),
            ],  # fmt: skip
        )
    return get(db, cursor.lastrowid), True


def claim(
    db,
    *,
    heavy_slots: int = 1,
    held: tuple[str, ...] = (),
    now: datetime | None = None,
) -> Job | None:
    """Take the oldest job that is due, in one transaction. Heavy jobs only while fewer
    than `heavy_slots` run (one per GPU; one on a CPU box); kinds in `held` (outside their
    window) are left queued."""
    with transaction(db):
        (busy,) = db.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND heavy = 1"
        ).fetchone()
        allow_heavy = busy < heavy_slots
        marks = ",".join("?" * len(held))
        rows = list(db.query(
            "SELECT * FROM jobs WHERE status = 'queued' AND not_before <= ? "
            f"{'' if allow_heavy else 'AND heavy = 0 '}"
            f"{f'AND kind NOT IN ({marks}) ' if held else ''}ORDER BY not_before, id LIMIT 1",
            [now_iso(at=now), *held],
        ))  # fmt: skip
        if not rows:
            return None
        db.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
            "finished_at = NULL WHERE id = ?",
            [now_iso(at=now), rows[0]["id"]],
        )
    return get(db, rows[0]["id"])


def _finish(db, job_id: int, status: str, error: str | None, now) -> None:
    db.execute(
        "UPDATE jobs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
        [status, now_iso(at=now), error, job_id],
    )


def done(db, job_id: int, result: dict | None = None, *, now: datetime | None = None) -> Job:
    with transaction(db):
        _finish(db, job_id, "done", None, now)
        if result is not None:
            db.execute(
                "UPDATE jobs SET result = ? WHERE id = ?", [json.dumps(result, default=str), job_id]
            )
    return get(db, job_id)


def failed(db, job_id: int, error: str, *, now: datetime | None = None) -> Job:
    """A failed attempt: queued again after the backoff, or failed for good."""
    now = now or datetime.now(UTC)
    with transaction(db):
        row = db.execute("SELECT attempts, max_attempts FROM jobs WHERE id = ?", [job_id])
        attempts, most = row.fetchone()
        if attempts < most:
            wait = timedelta(seconds=BACKOFF_S * 2 ** (attempts - 1))
            db.execute(
                "UPDATE jobs SET status = 'queued', not_before = ?, error = ? WHERE id = ?",
                [now_iso(at=now + wait), error, job_id],
            )
        else:
            _finish(db, job_id, "failed", error, now)
    return get(db, job_id)


def cancel(db, job_id: int, *, now: datetime | None = None) -> Job:
    job = get(db, job_id)
    if job.status not in LIVE:
        raise UsageError(f"job {job_id} is {job.status}: there is nothing to cancel")
    with transaction(db):
        _finish(db, job_id, "cancelled", None, now)
    return get(db, job_id)


def requeue_running(db, *, now: datetime | None = None) -> list[int]:
    """On start: jobs a crash (or a stop) left running are queued again. The interrupted
    attempt is not counted against the job: the daemon stopped, the job did not fail."""
    with transaction(db):
        ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'running'")]
        db.execute(
            "UPDATE jobs SET status = 'queued', not_before = ?, attempts = MAX(attempts - 1, 0) "
            "WHERE status = 'running'",
            [now_iso(at=now)],
        )
    return ids


def requeue(db, job_id: int, *, now: datetime | None = None) -> Job:
    """A job stopped at a checkpoint (not failed): queued again, its attempt not counted."""
    with transaction(db):
        db.execute(
            "UPDATE jobs SET status = 'queued', not_before = ?, attempts = MAX(attempts - 1, 0) "
            "WHERE id = ? AND status = 'running'",
            [now_iso(at=now), job_id],
        )
    return get(db, job_id)


def set_progress(db, job_id: int, progress: dict) -> None:
    with transaction(db):
        db.execute("UPDATE jobs SET progress = ? WHERE id = ?", [json.dumps(progress), job_id])


def set_log(db, job_id: int, log: str) -> None:
    """The log file of the job's current run (relative to FORGE_HOME)."""
    with transaction(db):
        db.execute("UPDATE jobs SET log = ? WHERE id = ?", [log, job_id])


def recent_failures(db, limit: int = 5) -> list[Job]:
    """Jobs failed for good, and failed attempts waiting for their retry, newest first."""
    rows = db.query(
        "SELECT * FROM jobs WHERE error IS NOT NULL AND (status = 'failed' OR "
        "(status = 'queued' AND attempts > 0)) ORDER BY COALESCE(finished_at, not_before) DESC "
        "LIMIT ?",
        [limit],
    )
    return [_job(r) for r in rows]


def counts(db) -> dict[str, int]:
    """How many jobs have each status (every status, in STATUSES' order)."""
    found = {s: 0 for s in STATUSES}
    found.update(dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")))
    return found


def hold(db, job_id: int, reason: str, until: datetime) -> Job:
    """A claimed job that may not start yet (too little disk): queued again until `until`,
    its attempt not counted, `reason` in its progress for status and the dashboard."""
    with transaction(db):
        (progress,) = db.execute("SELECT progress FROM jobs WHERE id = ?", [job_id]).fetchone()
        waiting = json.loads(progress) | {"waiting": reason}
        db.execute(
            "UPDATE jobs SET status = 'queued', not_before = ?, progress = ?, "
            "attempts = MAX(attempts - 1, 0) WHERE id = ? AND status = 'running'",
            [now_iso(at=until), json.dumps(waiting), job_id],
        )
    return get(db, job_id)


def latest_finished(db) -> dict[str, Job]:
    """Per kind, the newest job that ended done or failed (cancelled ones say nothing)."""
    rows = db.query(
        "SELECT * FROM jobs WHERE id IN (SELECT MAX(id) FROM jobs "
        "WHERE status IN ('done', 'failed') GROUP BY kind)"
    )
    return {row["kind"]: _job(row) for row in rows}


def finished(db, kinds: tuple[str, ...], limit: int = 50) -> list[Job]:
    """Jobs of `kinds` that ended done, newest first."""
    marks = ",".join("?" * len(kinds))
    rows = db.query(
        f"SELECT * FROM jobs WHERE status = 'done' AND kind IN ({marks}) "
        "ORDER BY finished_at DESC, id DESC LIMIT ?",
        [*kinds, limit],
    )
    return [_job(r) for r in rows]


def first_queued_at(db, kind: str) -> str | None:
    """When the first job of `kind` was queued; None if there never was one."""
    return db.execute("SELECT MIN(queued_at) FROM jobs WHERE kind = ?", [kind]).fetchone()[0]


def live_ids(db) -> set[int]:
    """The jobs queued or running: their logs are in use."""
    return {r[0] for r in db.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')")}
