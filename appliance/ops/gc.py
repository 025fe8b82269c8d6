"""`forge gc`: retention. What FORGE_HOME may lose after a while, found and removed.

- A finished training run (its adapter is registered) keeps its adapter, metrics and log,
  not its checkpoints; a run that never finished keeps them until it is resumed, or until
  nothing in it changed for retention.failed_run_days.
- An environment (or project overlay) unused for retention.env_unused_days goes, unless
  a requirement set of a package in the corpus needs it (overlays are rebuilt in a second).
- Logs of finished jobs and crash logs older than retention.job_log_days; cycle reports
  beyond the newest retention.cycle_reports.
- Backups that the backup retention does not keep (`store.backup.keep`).
- Model calls older than retention.call_log_days that nothing refers to
  (`referenced_call_ids`).

Never touched: adapters, dataset versions, the corpus, gate decisions, the backups their
retention keeps, anything of a job that is queued or running. forged runs it daily
(daemon.gc_at) and before it holds a job for want of disk. `dry_run` finds the same
things and removes nothing.
"""

from __future__ import annotations

import fcntl
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from appliance import registry
from appliance.campaign import store as campaign_store
from appliance.clock import now_iso
from appliance.config import Config
from appliance.datasets import versions as dataset_versions
from appliance.diskspace import tree_bytes
from appliance.errors import ForgeError
from appliance.evaluation import store as evaluation_store
from appliance.harness import envs
from appliance.ops import jobs
from appliance.records import as_json
from appliance.serving import calllog
from appliance.solve import runs as solve_runs
from appliance.store import backup
from appliance.training.checkpoints import checkpoint_dir

DAY = 86400.0
CHECKPOINT_DIRS = ("checkpoints", "trainer")  # SFT's rolling ones; DPO's (the HF Trainer's)
JOB_LOG = re.compile(r"^job-(\d+)\.log$")


@dataclass(frozen=True)
class Removal:
    """One thing gc removes (or, dry, would remove)."""

    # checkpoints | environment | project | job-log | crash-log | cycle-report | backup | call-log
    what: str
    path: str  # relative to FORGE_HOME
    bytes: int
    why: str

    def to_dict(self) -> dict:
        return as_json(self)


@dataclass(frozen=True)
class GcReport:
    at: str
    dry_run: bool
    removals: tuple[Removal, ...]
    skipped: tuple[str, ...] = ()  # found but left: in use right now

    @property
    def freed_bytes(self) -> int:
        return sum(r.bytes for r in self.removals)

    def by_kind(self) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for r in self.removals:
            entry = found.setdefault(r.what, {"count": 0, "bytes": 0})
            entry["count"] += 1
            entry["bytes"] += r.bytes
        return found

    def to_dict(self) -> dict:
        return as_json(self, "at", "dry_run", "freed_bytes", "removals", "skipped",
                       by_kind=self.by_kind())  # fmt: skip


@dataclass(frozen=True)
class _Planned:
    removal: Removal
    remove: Callable[[], bool]  # False: it was in use, nothing was removed


def referenced_call_ids(db) -> set[int]:
    """Every model call a row of Forge still refers to: one line per referring table,
    through the table's owner. A table that starts to refer to calls adds its line."""
    return (
        campaign_store.referenced_call_ids(db)  # triples.call_ids: a stage's answer
        | dataset_versions.referenced_call_ids(db)  # dataset_rows: each row's provenance
        | evaluation_store.referenced_call_ids(db)  # eval_examples.detail: the answers
        | solve_runs.referenced_call_ids(db)  # solve_runs.call_ids: an operator's run
    )


def collect(config: Config, db, *, dry_run: bool = False, now: datetime | None = None) -> GcReport:
    """Find what retention lets go and, unless `dry_run`, remove it."""
    now = now or datetime.now(UTC)
    with _gc_lock(config):
        planned = [
            *_training_runs(config, db, now),
            *_environments(config, db, now),
            *_job_logs(config, db, now),
            *_cycle_reports(config),
            *_backups(config, now),
        ]
        done, skipped = [], []
        for item in planned:
            if dry_run or item.remove():
                done.append(item.removal)
            else:
                skipped.append(f"{item.removal.path}: in use")
        calls = _call_log(config, db, now, dry_run)
    return GcReport(now_iso(at=now), dry_run, tuple(done + calls), tuple(skipped))


class _gc_lock:
    """One gc at a time (forged's daily one and an operator's)."""

    def __init__(self, config: Config) -> None:
        self.path = config.home / "gc.lock"

    def __enter__(self) -> None:
        self.fh = open(self.path, "w")  # noqa: SIM115 - held until __exit__
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self.fh.close()
            raise ForgeError("another forge gc is running", "wait for it to finish") from exc

    def __exit__(self, *exc) -> None:
        self.fh.close()


def _rel(config: Config, path: Path) -> str:
    return str(path.relative_to(config.home))


def _rmtree(path: Path) -> Callable[[], bool]:
    def remove() -> bool:
        shutil.rmtree(path, ignore_errors=True)
        return True

    return remove


def _unlink(path: Path) -> Callable[[], bool]:
    def remove() -> bool:
        path.unlink(missing_ok=True)
        return True

    return remove


def _newest_change(path: Path) -> float:
    newest = path.stat().st_mtime
    for entry in path.rglob("*"):
        try:
            newest = max(newest, entry.lstat().st_mtime)
        except OSError:  # removed meanwhile
            continue
    return newest


def _training_runs(config: Config, db, now: datetime) -> list[_Planned]:
    """Checkpoints of finished runs; of unfinished ones untouched for failed_run_days."""
    root = config.dir("runs") / "train"
    finished = {a.metrics.get("run_dir") for a in registry.adapters(db)}
    limit = now.timestamp() - config.settings.retention.failed_run_days * DAY
    planned = []
    for run in sorted(root.iterdir()) if root.is_dir() else []:
        if not run.is_dir() or run.is_symlink():
            continue
        if _rel(config, run) in finished:
            why = "the run finished: its adapter is registered (adapter, metrics, log kept)"
        elif _newest_change(run) < limit:
            days = config.settings.retention.failed_run_days
            why = f"the run never finished and nothing in it changed for {days:g} days"
        else:
            continue  # running, or waiting to be resumed
        for name in CHECKPOINT_DIRS:
            folder = checkpoint_dir(run) if name == "checkpoints" else run / name
            if folder.is_dir():
                removal = Removal("checkpoints", _rel(config, folder), tree_bytes(folder), why)
                planned.append(_Planned(removal, _rmtree(folder)))
    return planned


def _environments(config: Config, db, now: datetime) -> list[_Planned]:
    days = config.settings.retention.env_unused_days
    limit = now.timestamp() - days * DAY
    needed = envs.needed_keys(config, db)
    planned = []
    for env in envs.stored_environments(config):
        if env.last_used >= limit or (not env.project and env.key in needed):
            continue
        what = "project" if env.project else "environment"
        why = f"unused for {days:g} days" + ("" if env.project else "; no corpus package needs it")
        removal = Removal(what, _rel(config, env.path), tree_bytes(env.path, freed=True), why)
        planned.append(_Planned(removal, lambda env=env: envs.remove_environment(config, env)))
    return planned


def _job_logs(config: Config, db, now: datetime) -> list[_Planned]:
    days = config.settings.retention.job_log_days
    limit = now.timestamp() - days * DAY
    live = jobs.live_ids(db)
    runs = config.dir("runs")
    found = [(p, "job-log") for p in (runs / "jobs").glob("job-*.log")]
    found += [(p, "crash-log") for p in runs.glob("crash-*.log")]
    planned = []
    for path, what in sorted(found):
        match = JOB_LOG.match(path.name)
        if (match and int(match[1]) in live) or not path.is_file():
            continue
        if path.stat().st_mtime < limit:
            removal = Removal(what, _rel(config, path), path.stat().st_size,
                              f"older than {days:g} days")  # fmt: skip
            planned.append(_Planned(removal, _unlink(path)))
    return planned


def _cycle_reports(config: Config) -> list[_Planned]:
    """Reports beyond the newest `cycle_reports` (their names sort by start time)."""
    keep = config.settings.retention.cycle_reports
    folder = config.dir("runs") / "cycle"
    reports = sorted(folder.glob("cycle-*.json")) if folder.is_dir() else []
    return [
        _Planned(
            Removal(
                "cycle-report",
                _rel(config, p),
                p.stat().st_size,
                f"beyond the newest {keep} reports",
            ),  # fmt: skip
            _unlink(p),
        )
        for p in reports[: max(0, len(reports) - keep)]
    ]


def _backups(config: Config, now: datetime) -> list[_Planned]:
    """What the backup retention no longer keeps (forge backup prunes the same)."""
    planned = []
    for path in backup.prune(config, now=now, dry_run=True):
        removal = Removal("backup", _rel(config, path), path.stat().st_size,
                          "outside the backup retention (7 daily, 4 weekly)")  # fmt: skip
        planned.append(_Planned(removal, _unlink(path)))
    return planned


def _call_log(config: Config, db, now: datetime, dry_run: bool) -> list[Removal]:
    days = config.settings.retention.call_log_days
    cutoff = now_iso("milliseconds", at=now - timedelta(days=days))
    result = calllog.compact(db, cutoff, referenced_call_ids(db), dry_run=dry_run)
    if not result.rows:
        return []
    why = (
        f"{result.rows} model calls older than {days:g} days that no triple, dataset row, "
        "evaluation or operator run refers to (SQLite reuses their pages; the file does not shrink)"
    )
    return [Removal("call-log", "forge.db (model_calls)", result.bytes, why)]
