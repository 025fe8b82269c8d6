"""`forged`: takes jobs from the queue in the database and runs them, answering the control
socket meanwhile.

Heavy jobs (the ones that load a model: cycle, campaign, train, evaluate, promote) run in
child processes, one per GPU (one on a CPU box), so a crash in one cannot take the daemon
down. A job that spreads its units over devices (a cycle, campaign, evaluation or gated
promotion with `campaign.devices` or `evaluation.devices` ["all"], the default) holds every
GPU free when it starts, its CUDA_VISIBLE_DEVICES naming them all, and its campaign and
evaluation put one worker on each. Light ones (ingest, backup) run in threads and never
wait behind a heavy one. Each run's output goes to its own log, runs/jobs/job-N.log; the
daemon itself logs one line per event to stdout (journald under systemd). A child dies
with the daemon (PDEATHSIG), so a `kill -9` leaves nothing running that the next start
would run again.

SIGTERM: no new job starts, running children are asked to stop (they finish the step they
are in and checkpoint: campaign units, training steps) and the daemon exits within 30 s.
On start, jobs a crash or a stop left running are queued again and resume from their
checkpoints. Under systemd (Type=notify) it says READY once the socket and the schedules
run, keeps STATUS current, and pings the watchdog from the work loop.

Before a job starts, the disk-pressure guard (appliance.ops.pressure) checks free space;
short of it, a gc runs and the job waits, its reason in its row. A thread evaluates the
alert rules (appliance.ops.alerts) every alerts.every_s; with daemon.metrics_port set,
/metrics answers on loopback (daemon.metrics).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from appliance.childproc import Child, Raised, Returned, Stopped, raised
from appliance.clock import now_iso
from appliance.config import Config, load_config
from appliance.errors import ForgeError
from appliance.ops import actions, control, jobs
from appliance.ops.alerts import Watch
from appliance.ops.control import SOCKET
from appliance.ops.pressure import GUARDED, DiskGuard
from appliance.ops.work import KINDS, run_job, run_job_in_child
from appliance.resources import job_gpus
from appliance.store import open_db
from appliance.store.backup import PID_FILE
from daemon import metrics, schedule
from daemon.control import serve
from daemon.notify import Notifier

log = logging.getLogger("forged")
POLL_S = 1.0
STOP_GRACE_S = 25.0  # SIGTERM → children have this long to checkpoint, then are killed
WINDOWED = ("campaign", "cycle")  # held outside daemon.campaign_window


class Daemon:
    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.db = open_db(config)
        self.notifier = notifier or Notifier({})
        self.stopping = threading.Event()
        self.paused = False
        # Heavy jobs get the GPUs `forge serve` does not hold (serve.gpus).
        self.serve_gpus = config.settings.serve.gpus
        self.job_gpus = job_gpus(self.serve_gpus)
        self.gpus = len(self.job_gpus)
        self.slots = max(1, self.gpus)  # heavy jobs at once: one per GPU
        self.children: dict[int, tuple[Child, tuple[int, ...]]] = {}  # job → (proc, slots)
        self.threads: dict[int, threading.Thread] = {}
        self.started = now_iso()
        self.scheduler = None  # daemon.schedule's, set once the socket answers
        self.guard = DiskGuard(config)

    # --- the control socket --------------------------------------------------------------

    def dispatch(self, request: control.Request) -> dict:
        """Do what a control-socket request (already validated) asks; its answer."""
        db = open_db(self.config, migrate=False)  # one connection per request thread
        try:
            return self._dispatch(db, request)
        finally:
            db.conn.close()

    def _dispatch(self, db, request: control.Request) -> dict:
        match request:
            case control.Ping():  # ok once the schedules run too: the daemon is up
                return {"ok": self.scheduler is not None}
            case control.Status():
                return {"ok": True, "daemon": self.state(),
                        "running": [j.to_dict() for j in jobs.jobs(db, ("running",))],
                        "queue": [j.to_dict() for j in jobs.jobs(db, ("queued",))]}  # fmt: skip
            case control.Pause() | control.Resume():
                self.paused = request.command == "pause"
                log.info("%s by the operator", "paused" if self.paused else "resumed")
                return {"ok": True, "daemon": self.state()}
            case control.Ingest():
                return self._enqueue(db, "ingest", {})
            case control.RunIngest() | control.RunBackup() | control.RunCycle():
                return self._enqueue(db, request.kind, request.args.model_dump(exclude_unset=True))
            case control.RunPromote():
                return self._enqueue(db, "promote", request.args.model_dump())
            case control.Cancel():
                job = jobs.cancel(db, request.id)
                child = self.children.get(job.id)
                if child is not None and child[0].is_alive():
                    child[0].terminate()  # it checkpoints and stops
                log.info("job %d (%s) cancelled by the operator", job.id, job.kind)
                return {"ok": True, "job": job.to_dict()}
            case control.Rollback():
                result = actions.rollback_now(db, request.stage, request.to, request.to_base)
                log.info("rollback %s: %s → %s", result["stage"], result["from"], result["to"])
                return {"ok": True, "result": result}
            case control.Promote(force=True):
                result = actions.force_promote_now(db, request.stage, request.version)
                log.info("promote %s (forced, no gate): %s", result["stage"], result["version"])
                return {"ok": True, "result": result}
            case control.Promote():  # the gate evaluates: a heavy job
                args = {"stage": request.stage, "version": request.version}
                return self._enqueue(db, "promote", args)
        raise ForgeError(f"forged has no handler for {request.command!r}")  # a protocol change

    def _enqueue(self, db, kind: str, args: dict) -> dict:
        key = kind if kind != "promote" else f"promote:{args['stage']}"
        job, queued = jobs.enqueue(db, kind, args, key=key, heavy=KINDS[kind])
        if queued:
            log.info("job %d (%s) queued by the operator", job.id, kind)
        return {"ok": True, "job": job.to_dict(), "queued": queued}

    def state(self) -> dict:
        next_runs = schedule.next_runs(self.scheduler) if self.scheduler else {}
        return {"state": "paused" if self.paused else "running", "pid": os.getpid(),
                "since": self.started, "gpus": self.gpus, "heavy_slots": self.slots,
                "serve_gpus": self.serve_gpus, "job_gpus": self.held_gpus(),
                "campaign_window": self.config.settings.daemon.campaign_window or None,
                "next_runs": next_runs}  # fmt: skip

    # --- the work loop -------------------------------------------------------------------

    def loop(self) -> None:
        requeued = jobs.requeue_running(self.db)
        if requeued:
            log.info("requeued jobs left running by the last stop: %s", requeued)
        while not self.stopping.is_set():
            self.notifier.watchdog()
            self._reap()
            self.notifier.status(self._summary())
            job = None
            if not self.paused:
                held = () if in_window(self.config.settings.daemon.campaign_window) else WINDOWED
                free = self.slots if self._free_slots() else 0  # no slot: no heavy job
                job = jobs.claim(self.db, heavy_slots=free, held=held)
            if job is None:  # idle: wake for the next poll, or the watchdog's next ping
                self.stopping.wait(min(POLL_S, self.notifier.watchdog_s or POLL_S))
                continue
            if job.kind in GUARDED and not self.guard.admit(self.db, job).ok:
                continue  # held: queued again with the reason, looked at again later
            log.info("job %d (%s) started, attempt %d of %d", job.id, job.kind, job.attempts,
                     job.max_attempts)  # fmt: skip
            if job.heavy:
                self._start_child(job)
            else:
                thread = threading.Thread(target=self._run_light, args=(job,), daemon=True)
                self.threads[job.id] = thread
                thread.start()
        self.notifier.stopping()
        self._stop_children()

    def _summary(self) -> str:
        if self.paused:
            return "paused"
        running = [f"job {i}" for i in [*self.children, *list(self.threads)]]
        return ("running " + ", ".join(running)) if running else "idle"

    def _log_path(self, db, job) -> Path:
        folder = self.config.dir("runs") / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"job-{job.id}.log"
        jobs.set_log(db, job.id, str(path.relative_to(self.config.home)))
        return path

    def _free_slots(self) -> list[int]:
        used = {slot for _, slots in self.children.values() for slot in slots}
        return sorted(set(range(self.slots)) - used)

    def _spreads(self, kind: str) -> bool:
        """Whether a job of this kind spreads its units over every GPU it holds (campaign
        or evaluation devices ["all"]): then it holds every slot free when it starts."""
        settings = self.config.settings
        return (kind in ("cycle", "campaign") and settings.campaign.devices == ["all"]) or (
            kind in ("cycle", "evaluate", "promote") and settings.evaluation.devices == ["all"]
        )

    def held_gpus(self) -> dict[str, list[str]]:
        """job id → the GPUs it holds (for status and the dashboard)."""
        children = list(self.children.items())  # the work loop may change it meanwhile
        return {str(job_id): [self.job_gpus[s] for s in slots]
                for job_id, (_, slots) in children if self.gpus}  # fmt: skip

    def slots_for(self, kind: str) -> tuple[int, ...]:
        """The slots a heavy job of this kind takes now: every free one when it spreads
        over GPUs, else the first free one."""
        free = self._free_slots()
        return tuple(free if self.gpus and self._spreads(kind) else free[:1])

    def _start_child(self, job) -> None:
        slots = self.slots_for(job.kind)
        path = self._log_path(self.db, job)
        gpu = ",".join(self.job_gpus[s] for s in slots) if self.gpus else None
        # A daemon killed with -9 takes its jobs with it; SIGTERM: the step in progress
        # checkpoints, then Stopped unwinds the job; the job's GPU is set before torch loads.
        child = Child(run_job_in_child, (str(self.config.home), job.id, job.kind, job.args, gpu),
                      path, name=f"forged-{job.kind}", on_sigterm="raise",
                      env=self._gpu_env(gpu),
                      expected=(Stopped, ForgeError))  # fmt: skip
        self.children[job.id] = (child, slots)
        if gpu is not None:
            log.info("job %d (%s) holds GPU %s", job.id, job.kind, gpu)

    def _gpu_env(self, gpu: str | None) -> dict[str, str]:
        """A heavy job's CUDA_VISIBLE_DEVICES: its GPU or GPUs ("0,2"); none at all when
        every GPU is serve's (it runs on the CPU rather than beside the server)."""
        if gpu is not None:
            return {"CUDA_VISIBLE_DEVICES": gpu}
        return {"CUDA_VISIBLE_DEVICES": ""} if self.serve_gpus else {}

    def _run_light(self, job) -> None:
        db = open_db(self.config, migrate=False)
        path = self._log_path(db, job)
        try:
            result = run_job(str(self.config.home), job.kind, job.args)
            jobs.done(db, job.id, result)
            with path.open("a") as out:
                out.write(f"{now_iso(local=True)} done: {json.dumps(result, default=str)}\n")
            log.info("job %d (%s) done", job.id, job.kind)
        except Exception as exc:  # a bug in the job must not leave it running for ever
            why = raised(exc).reason()
            job = jobs.failed(db, job.id, why)
            with path.open("a") as out:
                out.write(f"{now_iso(local=True)} failed: {exc}\n")
            log.warning("job %d (%s) failed: %s", job.id, job.kind, why)
        finally:
            db.conn.close()
            self.threads.pop(job.id, None)

    def _reap(self) -> None:
        for job_id, (child, _) in list(self.children.items()):
            if child.is_alive():
                continue
            outcome = child.outcome()
            child.join()
            del self.children[job_id]
            if jobs.get(self.db, job_id).status == "cancelled":
                continue
            if isinstance(outcome, Returned):
                jobs.done(self.db, job_id, outcome.value)
                log.info("job %d done", job_id)
            elif isinstance(outcome, Raised) and outcome.stopped:
                jobs.requeue(self.db, job_id)
                log.info("job %d stopped at a checkpoint; queued again", job_id)
            else:
                why = outcome.reason() if outcome else f"the job's process died ({child.died()})"
                job = jobs.failed(self.db, job_id, why)
                again = f"retry after {job.not_before}" if job.status == "queued" else "gave up"
                log.warning("job %d failed (%s): %s", job_id, again, why)

    def _stop_children(self) -> None:
        deadline = time.monotonic() + STOP_GRACE_S
        for child, _ in self.children.values():
            child.terminate()  # SIGTERM: the job checkpoints the step it is in
        for child, _ in self.children.values():
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join()
        # Jobs stopped here stay 'running' and are queued again on the next start.


def in_window(window: str, now: datetime | None = None) -> bool:
    """Whether `now` (local time) is inside "HH:MM-HH:MM" (it may wrap midnight); an
    empty window is always open."""
    if not window:
        return True
    start, end = ((int(h), int(m)) for h, m in (t.split(":") for t in window.split("-")))
    current = (now or datetime.now()).timetuple()[3:5]
    if start <= end:
        return start <= current < end
    return current >= start or current < end


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="forged %(levelname)s %(message)s")  # fmt: skip
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per event: ours
    notifier = Notifier()
    try:
        config = load_config()
        config.ensure_dirs()
        pid_file = config.home / PID_FILE
        daemon = Daemon(config, notifier)
        # Before the socket answers: whoever sees it answer may already send SIGTERM.
        signal.signal(signal.SIGTERM, lambda *_: daemon.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: daemon.stopping.set())
        server = serve(config.home / SOCKET, daemon.dispatch)
        daemon.scheduler = schedule.start(config)
        exporter = metrics.serve(config)
    except ForgeError as exc:
        print(f"forged: {exc}", file=sys.stderr)
        return 1
    pid_file.write_text(f"{os.getpid()}\n")
    log.info("started on %s (pid %d, %d GPU(s), %d heavy job(s) at a time)",
             json.dumps(str(config.home)), os.getpid(), daemon.gpus, daemon.slots)  # fmt: skip
    notifier.ready("idle")
    threading.Thread(target=Watch(config).run, args=(daemon.stopping,), name="forged-alerts",
                     daemon=True).start()  # fmt: skip
    try:
        daemon.loop()
    finally:
        daemon.scheduler.shutdown(wait=False)
        if exporter is not None:
            exporter.shutdown()
        server.shutdown()
        server.server_close()
        (config.home / SOCKET).unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
