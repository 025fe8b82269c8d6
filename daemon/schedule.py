"""forged's schedules: APScheduler 3 with a job store file of its own
(FORGE_HOME/scheduler.db), opened by the daemon alone. A scheduled run only queues a
job (appliance.ops.jobs, one live job per kind), so the work loop decides what runs when,
and a schedule that fires while its job is still queued adds nothing."""

from __future__ import annotations

import logging
import os

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from appliance.config import Config, load_config
from appliance.ops import jobs
from appliance.packages.ingest import is_complete
from appliance.store import open_db

log = logging.getLogger("forged")
STORE = "scheduler.db"


def queue(home: str, kind: str) -> None:
    """What a schedule does: queue `kind` (module-level, so the job store can name it)."""
    os.environ["FORGE_HOME"] = home
    config = load_config()
    db = open_db(config, migrate=False)
    try:
        if kind == "ingest" and not _waiting(config):
            return
        job, queued = jobs.enqueue(db, kind, key=kind, heavy=kind == "cycle")
        if queued:
            log.info("scheduled: job %d (%s) queued", job.id, kind)
    finally:
        db.conn.close()


def _waiting(config: Config) -> bool:
    """Whether ingest/ holds a complete package (a copy in progress is left alone)."""
    folder = config.dir("ingest")
    quiet = config.settings.ingest.quiet_seconds
    return folder.is_dir() and any(
        not p.name.startswith(".") and is_complete(p, quiet) for p in folder.iterdir()
    )


def start(config: Config) -> BackgroundScheduler:
    settings = config.settings.daemon
    store = SQLAlchemyJobStore(url=f"sqlite:///{config.home / STORE}")
    scheduler = BackgroundScheduler(jobstores={"default": store}, job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})  # fmt: skip
    scheduler.start(paused=True)  # jobs are (re)added to the store first, then it runs
    home = str(config.home)
    scheduler.add_job(queue, "interval", seconds=settings.ingest_every_s, args=[home, "ingest"],
                      id="ingest-watch", replace_existing=True)  # fmt: skip
    hour, minute = (int(x) for x in settings.backup_at.split(":"))
    scheduler.add_job(queue, "cron", hour=hour, minute=minute, args=[home, "backup"],
                      id="backup", replace_existing=True)  # fmt: skip
    hour, minute = (int(x) for x in settings.gc_at.split(":"))
    scheduler.add_job(queue, "cron", hour=hour, minute=minute, args=[home, "gc"], id="gc",
                      replace_existing=True)  # fmt: skip
    if settings.cycle_every_minutes:
        scheduler.add_job(queue, "interval", minutes=settings.cycle_every_minutes,
                          args=[home, "cycle"], id="cycle", replace_existing=True)  # fmt: skip
    elif scheduler.get_job("cycle"):
        scheduler.remove_job("cycle")
    scheduler.resume()
    return scheduler


def next_runs(scheduler: BackgroundScheduler) -> dict[str, str | None]:
    return {
        job.id: job.next_run_time.isoformat() if job.next_run_time else None
        for job in scheduler.get_jobs()
    }
