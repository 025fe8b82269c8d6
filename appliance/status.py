"""`forge status`: what the appliance holds and how much room it has left."""

from __future__ import annotations

import json
import shutil

import sqlite_utils

from appliance import registry
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.ops import jobs
from appliance.ops.control import request
from appliance.resources import snapshot


def gather(config: Config, db: sqlite_utils.Database, resources: dict | None = None) -> dict:
    """The state an operator asks about, as plain data (the CLI renders it or dumps JSON).
    `resources` replaces the live CPU/memory/disk/GPU sample (fixed pictures in tests)."""
    packages = [
        dict(row)
        for row in db.query(
            "SELECT p.name, p.version, p.split, p.ingested_at, COUNT(c.id) AS commits, "
            "(SELECT COUNT(*) FROM gold_results g WHERE g.package_id = p.id) AS graded, "
            "(SELECT COUNT(*) FROM gold_results g WHERE g.package_id = p.id AND g.usable) "
            "AS usable, "
            "(SELECT COUNT(*) FROM gold_results g WHERE g.package_id = p.id "
            "AND g.status = 'infra') AS infra "
            "FROM packages p LEFT JOIN commits c ON c.package_id = p.id "
            "GROUP BY p.id ORDER BY p.name, p.version"
        )
    ]
    quarantine_dir = config.dir("quarantine")
    quarantined = (
        sorted(p.name for p in quarantine_dir.iterdir()) if quarantine_dir.is_dir() else []
    )
    last = db.execute(
        "SELECT at, source, outcome, reasons FROM ingest_events ORDER BY id DESC LIMIT 1"
    ).fetchone()
    ingest_dir = config.dir("ingest")
    waiting = (
        sorted(p.name for p in ingest_dir.iterdir() if not p.name.startswith("."))
        if ingest_dir.is_dir()
        else []
    )
    db_bytes = sum(p.stat().st_size for p in config.home.glob("forge.db*") if p.is_file())
    disk = shutil.disk_usage(config.home)
    return {
        "home": str(config.home),
        "corpus": {
            "packages": len(packages),
            "commits": sum(p["commits"] for p in packages),
            "items": packages,
        },
        "quarantine": {"packages": len(quarantined), "items": quarantined},
        "ingest": {
            "waiting": waiting,
            "last": None
            if last is None
            else {
                "at": last[0],
                "source": last[1],
                "outcome": last[2],
                "reasons": json.loads(last[3]),
            },
        },
        "database": {"path": str(config.db_path), "bytes": db_bytes},
        "disk": {"free_bytes": disk.free, "total_bytes": disk.total},
        "daemon": _daemon(config),
        "adapters": {a.stage: a.name for a in registry.active_versions(db)},
        "jobs": _jobs(db),
        "resources": resources if resources is not None else snapshot(config.home),
    }


def _jobs(db) -> dict:
    """Counts per status, the running jobs with their progress, the queue, and the recent
    failures (read from the database, so they show with or without a daemon)."""
    return {
        "counts": jobs.counts(db),
        "running": [j.to_dict() for j in jobs.jobs(db, ("running",))],
        "queue": [j.to_dict() for j in reversed(jobs.jobs(db, ("queued",)))],
        "recent_failures": [j.to_dict() for j in jobs.recent_failures(db)],
    }


def _daemon(config: Config) -> dict:
    """forged's own answer when it runs; `running` false (and why) when it does not."""
    try:
        answer = request(config, "status", timeout=3)
    except ForgeError as exc:
        return {"running": False, "error": exc.message}
    if not answer or not answer.get("ok"):
        return {"running": False}
    return {"running": True, **answer["daemon"]}
