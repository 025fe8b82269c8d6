"""The disk-pressure guard as forged applies it: before a job starts, free space must
cover what it may write plus the floor (appliance.diskspace); when it does not, a gc runs
first and, if that is not enough, the job waits with the reason in its row."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from appliance.config import Config
from appliance.diskspace import HEAVY_KINDS, Room, job_need_bytes, room
from appliance.ops import gc, jobs

log = logging.getLogger("forged")
RETRY = timedelta(minutes=1)  # a held job is looked at again after this
GC_EVERY = timedelta(minutes=10)  # at most one gc this often for want of disk


GUARDED = (*HEAVY_KINDS, "ingest")  # backup and gc never wait: they are what helps


class DiskGuard:
    """forged's: whether a claimed job may start now; it remembers when it last ran gc."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.last_gc: datetime | None = None

    def admit(self, db, job, now: datetime | None = None) -> Room:
        """Room for `job` (a claimed one). Short of it: gc (not more often than GC_EVERY),
        then look again; still short: the job is held (queued again, not counted) with the
        reason for status and the dashboard."""
        now = now or datetime.now(UTC)
        found = room(self.config, job.kind, job_need_bytes(self.config, job.kind))
        if found.ok:
            return self._started(db, job, found)
        if self.last_gc is None or now - self.last_gc >= GC_EVERY:
            self.last_gc = now
            try:
                report = gc.collect(self.config, db, now=now)
                log.info("disk short for job %d (%s): gc freed %d bytes", job.id, job.kind,
                         report.freed_bytes)  # fmt: skip
            except Exception as exc:  # a gc that fails must not take the work loop down
                log.warning("disk short for job %d (%s); gc failed: %s", job.id, job.kind, exc)
            found = room(self.config, job.kind, job_need_bytes(self.config, job.kind))
            if found.ok:
                return self._started(db, job, found)
        if "waiting" not in job.progress:  # one line when it starts waiting, not each retry
            log.warning("job %d (%s) waits: %s", job.id, job.kind, found.reason())
        jobs.hold(db, job.id, found.reason(), now + RETRY)
        return found

    def _started(self, db, job, found: Room) -> Room:
        if "waiting" in job.progress:  # it waited before: the reason is history now
            rest = {k: v for k, v in job.progress.items() if k != "waiting"}
            jobs.set_progress(db, job.id, rest)
        return found
