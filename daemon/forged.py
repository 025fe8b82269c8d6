"""`forged`: takes jobs from the queue in the database and runs them, answering the control
socket meanwhile. Heavy jobs (the whole cycle) run in a child process, one at a time, so a
crash in one cannot take the daemon down; light ones (ingest, backup) run in a thread and
never wait behind a heavy one. SIGTERM: no new job is started, the running child is asked
to stop (it checkpoints: campaign units, training checkpoints) and the daemon exits within
30 s. On start, jobs a crash left running are queued again.

Schedules (daemon.schedule) only queue jobs. Not here yet (issue 8): systemd notify,
the unit file, and routing promote/rollback through the socket.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

from appliance import jobs
from appliance.config import Config, load_config
from appliance.control import SOCKET
from appliance.errors import ForgeError
from appliance.store import open_db
from appliance.store.backup import PID_FILE

log = logging.getLogger("forged")
POLL_S = 1.0
STOP_GRACE_S = 25.0  # SIGTERM → the child has this long to checkpoint, then it is killed
HEAVY = {"cycle"}
KINDS = {"ingest", "backup", "cycle"}


def run_job(home: str, kind: str, args: dict) -> dict:
    """One job's work (in a child process for heavy ones): its summary as JSON."""
    os.environ["FORGE_HOME"] = home
    config = load_config()
    db = open_db(config)
    if kind == "ingest":
        from appliance.packages.ingest import ingest

        return {"results": [r.to_dict() for r in ingest(config, db)]}
    if kind == "backup":
        from appliance.store.backup import make_backup

        return make_backup(config).to_dict()
    if kind == "cycle":
        from appliance.cycle.loop import run_cycle

        return run_cycle(config, db).to_dict()
    raise ForgeError(f"unknown job kind {kind!r}")


def _child(home: str, kind: str, args: dict, log_path: str, conn) -> None:
    with open(log_path, "a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    try:
        conn.send(("ok", run_job(home, kind, args)))
    except ForgeError as exc:
        conn.send(("error", exc.message))
    except Exception as exc:  # the job's bug must not become the daemon's
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.db = open_db(config)
        self.stopping = threading.Event()
        self.paused = False
        self.children: dict[int, multiprocessing.Process] = {}
        self.threads: dict[int, threading.Thread] = {}
        self.started = time.time()
        self.scheduler = None  # daemon.schedule's, set once the socket answers

    # --- the control socket --------------------------------------------------------------

    def dispatch(self, request: dict) -> dict:
        db = open_db(self.config, migrate=False)  # one connection per request thread
        try:
            command = request["command"]
            if command == "ping":  # ok once the schedules run too: the daemon is up
                return {"ok": self.scheduler is not None}
            if command == "status":
                return {"ok": True, "daemon": self.state(),
                        "running": [j.to_dict() for j in jobs.jobs(db, ("running",))],
                        "queue": [j.to_dict() for j in jobs.jobs(db, ("queued",))]}  # fmt: skip
            if command in ("pause", "resume"):
                self.paused = command == "pause"
                return {"ok": True, "daemon": self.state()}
            if command == "run":
                kind = request.get("kind")
                if kind not in KINDS:
                    return {"ok": False, "error": f"unknown job kind {kind!r}; kinds: "
                            + ", ".join(sorted(KINDS))}  # fmt: skip
                job, queued = jobs.enqueue(db, kind, request.get("args") or {}, key=kind,
                                           heavy=kind in HEAVY)  # fmt: skip
                return {"ok": True, "job": job.to_dict(), "queued": queued}
            if command == "cancel":
                job = jobs.cancel(db, int(request.get("id", 0)))
                child = self.children.get(job.id)
                if child is not None and child.is_alive():
                    child.terminate()
                return {"ok": True, "job": job.to_dict()}
            return {"ok": False, "error": f"unknown command {command!r}"}
        finally:
            db.conn.close()

    def state(self) -> dict:
        from daemon.schedule import next_runs

        return {"state": "paused" if self.paused else "running", "pid": os.getpid(),
                "since": self.started,
                "next_runs": next_runs(self.scheduler) if self.scheduler else {}}  # fmt: skip

    # --- the work loop -------------------------------------------------------------------

    def loop(self) -> None:
        requeued = jobs.requeue_running(self.db)
        if requeued:
            log.info("requeued jobs left running: %s", requeued)
        while not self.stopping.is_set():
            self._reap()
            job = None if self.paused else jobs.claim(self.db, heavy=not self.children)
            if job is None:
                self.stopping.wait(POLL_S)
                continue
            log.info("job %d (%s) started, attempt %d", job.id, job.kind, job.attempts)
            if job.heavy:
                self._start_child(job)
            else:
                thread = threading.Thread(target=self._run_light, args=(job,), daemon=True)
                self.threads[job.id] = thread
                thread.start()
        self._stop_children()

    def _log_path(self, job) -> Path:
        folder = self.config.dir("runs") / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"job-{job.id}.log"

    def _start_child(self, job) -> None:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        path = self._log_path(job)
        child = context.Process(target=_child, name=f"forged-{job.kind}",
                                args=(str(self.config.home), job.kind, job.args, str(path),
                                      sender))  # fmt: skip
        child.start()
        sender.close()
        child.receiver = receiver
        self.children[job.id] = child

    def _run_light(self, job) -> None:
        db = open_db(self.config, migrate=False)
        try:
            run_job(str(self.config.home), job.kind, job.args)
            jobs.done(db, job.id)
            log.info("job %d (%s) done", job.id, job.kind)
        except ForgeError as exc:
            jobs.failed(db, job.id, exc.message)
            log.warning("job %d (%s) failed: %s", job.id, job.kind, exc.message)
        finally:
            db.conn.close()

    def _reap(self) -> None:
        for job_id, child in list(self.children.items()):
            if child.is_alive():
                continue
            outcome = child.receiver.recv() if child.receiver.poll() else None
            child.join()
            del self.children[job_id]
            if jobs.get(self.db, job_id).status == "cancelled":
                continue
            if outcome is not None and outcome[0] == "ok":
                jobs.done(self.db, job_id)
                log.info("job %d done", job_id)
            else:
                why = outcome[1] if outcome else f"the job's process died (exit {child.exitcode})"
                jobs.failed(self.db, job_id, why)
                log.warning("job %d failed: %s", job_id, why)

    def _stop_children(self) -> None:
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children.values():
            child.terminate()  # SIGTERM: the job stops after the unit it is in
        for child in self.children.values():
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join()
        # Jobs stopped here stay 'running' and are queued again on the next start.


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="forged %(levelname)s %(message)s")  # fmt: skip
    try:
        config = load_config()
        config.ensure_dirs()
        pid_file = config.home / PID_FILE
        from daemon.control import serve

        daemon = Daemon(config)
        # Before the socket answers: whoever sees it answer may already send SIGTERM.
        signal.signal(signal.SIGTERM, lambda *_: daemon.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: daemon.stopping.set())
        server = serve(config.home / SOCKET, daemon.dispatch)
        from daemon import schedule

        daemon.scheduler = schedule.start(config)
    except ForgeError as exc:
        print(f"forged: {exc}", file=sys.stderr)
        return 1
    pid_file.write_text(f"{os.getpid()}\n")
    log.info("started on %s", json.dumps(str(config.home)))
    try:
        daemon.loop()
    finally:
        daemon.scheduler.shutdown(wait=False)
        server.shutdown()
        server.server_close()
        (config.home / SOCKET).unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
