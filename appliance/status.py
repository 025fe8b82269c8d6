"""`forge status`: what the appliance holds and how much room it has left."""

from __future__ import annotations

import shutil

import sqlite_utils

from appliance import registry
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.harness.results import GoldCounts, gold_counts
from appliance.ops import alerts, jobs
from appliance.ops.control import request
from appliance.packages import corpus
from appliance.resources import snapshot
from appliance.serve.state import read_state


def gather(config: Config, db: sqlite_utils.Database, resources: dict | None = None) -> dict:
    """The state an operator asks about, as plain data (the CLI renders it or dumps JSON).
    `resources` replaces the live CPU/memory/disk/GPU sample (fixed pictures in tests)."""
    packages = _packages(db)
    quarantine_dir = config.dir("quarantine")
    quarantined = (
        sorted(p.name for p in quarantine_dir.iterdir()) if quarantine_dir.is_dir() else []
    )
    last = next(iter(corpus.events(db, 1)), None)
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
                "at": last.at,
                "source": last.source,
                "outcome": last.outcome,
                "reasons": list(last.reasons),
            },
        },
        "database": {"path": str(config.db_path), "bytes": db_bytes},
        "disk": {"free_bytes": disk.free, "total_bytes": disk.total},
        "daemon": _daemon(config),
        "serve": read_state(config),
        "adapters": {a.stage: a.name for a in registry.active_versions(db)},
        "jobs": _jobs(db),
        "alerts": [a.to_dict() for a in alerts.alerts(db)],
        "resources": resources if resources is not None else snapshot(config.home),
    }


def _packages(db: sqlite_utils.Database) -> list[dict]:
    """Each package version with its commits and gold results counted (JSON data)."""
    commits = corpus.commit_counts(db)
    gold = gold_counts(db)
    items = []
    for p in corpus.packages(db):
        counts = gold.get(p.id, GoldCounts())
        items.append(
            {
                "name": p.name,
                "version": p.version,
                "split": p.split,
                "ingested_at": p.ingested_at,
                "commits": commits.get(p.id, 0),
                "graded": counts.graded,
                "usable": counts.usable,
                "infra": counts.infra,
            }
        )
    return items


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
