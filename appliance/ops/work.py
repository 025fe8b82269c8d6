"""What each kind of job does: the work forged runs (heavy kinds in a child process) and
`forge job run` does in the foreground when no daemon runs."""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

from appliance.childproc import Stopped
from appliance.clock import now_iso
from appliance.config import FORGE_ROOT, load_config
from appliance.cycle.loop import run_cycle
from appliance.cycle.profile import with_profile
from appliance.datapackages.take import take_data_package
from appliance.datasets.versions import rows_made_from
from appliance.errors import ForgeError
from appliance.ops import actions, gc, jobs
from appliance.packages.ingest import ingest
from appliance.sandbox import check_sandbox
from appliance.store import open_db
from appliance.store.backup import make_backup

# kind → heavy (loads a model). The cycle's parts are its own idempotent steps.
KINDS = {"ingest": False, "backup": False, "gc": False, "cycle": True, "campaign": True,
         "train": True, "evaluate": True, "promote": True}  # fmt: skip
CYCLE_PARTS = {"cycle": None, "campaign": ("campaign",), "train": ("datasets", "train"),
               "evaluate": ("evaluate",)}  # fmt: skip


class JobProgress:
    """The cycle's progress (appliance.cycle.loop.Progress) as the job's progress row
    (at most once a second) and one log line per event in the job's log."""

    def __init__(self, db, job_id: int) -> None:
        self.db, self.job_id, self.last = db, job_id, 0.0
        # The steps an earlier, interrupted run of this job finished: kept in the row.
        self.completed: dict[str, dict] = jobs.get(db, job_id).progress.get("completed", {})
        self.shown: dict = {}  # the step's state in the row; "workers" kept within a step

    def _write(self, data: dict, force: bool = False) -> None:
        same_step = data.get("step") == self.shown.get("step")
        self.shown = ({"workers": self.shown["workers"]} if same_step and "workers" in self.shown
                      else {}) | data  # fmt: skip
        now = time.monotonic()
        if force or now - self.last >= 1.0:
            jobs.set_progress(self.db, self.job_id, self.shown | {"completed": self.completed})
            self.last = now

    def step(self, name: str, text: str) -> None:
        print(f"{now_iso(local=True)} step {name} started", flush=True)
        self._write({"step": name, "text": text}, force=True)

    def advance(self, name: str, done: int, total: int, text: str = "") -> None:
        print(f"{now_iso(local=True)} {name} {done}/{total} {text}".rstrip(), flush=True)
        self._write(
            {"step": name, "done": done, "total": total, "text": text}, force=done == total
        )  # the end of a step is always written

    def workers(self, busy: dict[str, str]) -> None:
        """Each device's worker, in the row (the dashboard shows them) and the log."""
        doing = ", ".join(f"{device}: {text or 'idle'}" for device, text in busy.items())
        print(f"{now_iso(local=True)} workers {doing}", flush=True)
        self._write({k: v for k, v in self.shown.items() if k != "workers"} | {"workers": busy},
                    force=True)  # fmt: skip

    def done(self, step) -> None:
        print(f"{now_iso(local=True)} step {step.name} {step.status} in {step.seconds:.0f} s "
              f"{json.dumps(step.detail, default=str)}", flush=True)  # fmt: skip
        if step.status != "failed":
            self.completed[step.name] = dict(step.__dict__)
        self.shown = {}  # the step's workers are done with it
        self._write({"step": step.name, "text": step.status}, force=True)


def run_job_in_child(home: str, job_id: int, kind: str, args: dict, gpu) -> Any:
    """run_job in a heavy job's child process (forged's childproc.Child), with the lines
    of its start and end in its log."""
    print(f"{now_iso(local=True)} job {job_id} ({kind}) started in process {os.getpid()}"
          + (f" on GPU {gpu}" if gpu else ""), flush=True)  # fmt: skip
    try:
        result = run_job(home, kind, args, job_id)
    except Stopped as exc:
        print(f"{now_iso(local=True)} job {job_id} stopped: {exc.message}", flush=True)
        raise
    except ForgeError as exc:
        print(f"{now_iso(local=True)} job {job_id} failed: {exc}", flush=True)
        raise
    print(f"{now_iso(local=True)} job {job_id} done", flush=True)
    return result


def run_job(home: str, kind: str, args: dict, job_id: int | None = None) -> dict:
    """One job's work (in a child process for heavy ones): its result, as JSON data."""
    os.environ["FORGE_HOME"] = home
    config = load_config()
    db = open_db(config)
    if kind == "ingest":
        results = ingest(
            config, db, trained_rows=functools.partial(rows_made_from, db),
            take_data=functools.partial(take_data_package, config, db),
        )  # fmt: skip
        return {"results": [r.to_dict() for r in results]}
    if kind == "backup":
        return make_backup(config).to_dict()
    if kind == "gc":
        return gc.collect(config, db).to_dict()
    progress = JobProgress(db, job_id) if job_id is not None else None
    if kind in CYCLE_PARTS:
        source, keep = (Path(args["source"]), False) if args.get("source") else (None, False)
        if args.get("demo"):
            config = with_profile(config)
            source, keep = FORGE_ROOT / "repo_packages" / "demo", True
        check_sandbox(config)
        report = run_cycle(config, db, source=source, keep=keep, commits=args.get("commits"),
                           progress=progress, only=CYCLE_PARTS[kind],
                           resume=progress.completed if progress else None)  # fmt: skip
        return report.to_dict()
    if kind == "promote":

        def on_progress(stage, arm, i, n):
            if progress:
                progress.advance("evaluate", i, n, f"{stage}: {arm}")

        on_workers = progress.workers if progress else None
        return actions.gate_promote_now(config, db, args["stage"], int(args["version"]),
                                        on_progress, on_workers)  # fmt: skip
    raise ForgeError(f"unknown job kind {kind!r}")
