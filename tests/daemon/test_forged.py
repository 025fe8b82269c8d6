"""forged as a real process on a temporary FORGE_HOME: the control socket, jobs run to
done, crash recovery, a stale socket, a second daemon refused, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.ops import jobs
from appliance.ops.control import request

ROOT = Path(__file__).resolve().parents[2]


def start(config) -> subprocess.Popen:
    env = os.environ | {"FORGE_HOME": str(config.home)}
    command = [sys.executable, "-m", "daemon.forged"]
    out = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, **out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"forged exited: {proc.stdout.read()}")
        answer = request(config, "ping") if (config.home / "forged.sock").exists() else None
        if answer and answer.get("ok"):
            return proc
        time.sleep(0.1)
    proc.kill()
    pytest.fail("forged did not answer within 30 s")


def stop(proc: subprocess.Popen) -> float:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    return time.monotonic() - started


def wait_done(db, job_id: int, seconds: float = 60) -> jobs.Job:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = jobs.get(db, job_id)
        if job.status in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job_id} still {jobs.get(db, job_id).status}")


def test_a_job_asked_for_over_the_socket_runs_and_sigterm_stops_it(home):
    config, db = home
    proc = start(config)
    try:
        status = request(config, "status")
        assert status["daemon"]["state"] == "running" and status["daemon"]["pid"] == proc.pid
        assert oct((config.home / "forged.sock").stat().st_mode & 0o777) == "0o660"
        answer = request(config, "run", kind="backup")
        assert answer["ok"] and answer["queued"]
        assert wait_done(db, answer["job"]["id"]).status == "done"
        assert list(config.dir("backups").glob("forge-*.db"))
        assert request(config, "run", kind="bogus")["ok"] is False
        from appliance.status import gather

        shown = gather(config, db)["daemon"]
        assert shown["running"] and shown["pid"] == proc.pid
        assert request(config, "pause")["daemon"]["state"] == "paused"
        assert request(config, "resume")["daemon"]["state"] == "running"
    finally:
        took = stop(proc)
    assert took < 30
    assert not (config.home / "forged.sock").exists() and not (config.home / "forged.pid").exists()
    assert request(config, "ping") is None  # no daemon: callers work in the foreground
    from appliance.status import gather

    assert gather(config, db)["daemon"] == {"running": False}


def test_a_package_dropped_into_ingest_is_taken_by_the_schedule(home):
    import shutil

    from tests.harness.conftest import DEMO

    config, db = home
    (config.home / "forge.toml").write_text("[daemon]\ningest_every_s = 1\n")
    proc = start(config)
    try:
        runs = request(config, "status")["daemon"]["next_runs"]
        assert {"ingest-watch", "backup", "cycle", "gc"} <= set(runs)
        assert (config.home / "scheduler.db").is_file()
        copy = config.dir("ingest") / ".copying-demo"
        shutil.copytree(DEMO, copy, symlinks=True)
        (copy / "READY").write_text("")
        copy.rename(config.dir("ingest") / "demo")  # now complete, with its READY marker
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and not db.execute("SELECT 1 FROM packages WHERE name = 'demo'").fetchone()
        ):
            time.sleep(0.5)
        (job,) = [j for j in jobs.jobs(db) if j.kind == "ingest"]
        assert wait_done(db, job.id).status == "done"
        assert db.execute("SELECT COUNT(*) FROM packages").fetchone()[0] == 1
    finally:
        stop(proc)


def test_a_job_left_running_by_a_crash_is_run_again(home):
    config, db = home
    job, _ = jobs.enqueue(db, "backup", key="backup")
    jobs.claim(db)  # as if forged had died mid-job
    proc = start(config)
    try:
        finished = wait_done(db, job.id)
        assert finished.status == "done" and finished.attempts == 1  # the crash is not counted
    finally:
        stop(proc)


def test_a_stale_socket_is_replaced_and_a_second_daemon_refused(home):
    config, _ = home
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(config.home / "forged.sock"))
    stale.close()  # the file stays, nobody answers: what a crash leaves
    proc = start(config)
    try:
        env = os.environ | {"FORGE_HOME": str(config.home)}
        second = subprocess.run([sys.executable, "-m", "daemon.forged"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert second.returncode == 1 and "already answers" in second.stderr
        assert request(config, "ping")["ok"]  # the first one is untouched
    finally:
        stop(proc)


def test_socket_commands_rollback_promote_pause_cancel_and_the_cli_through_them(home):
    from click.testing import CliRunner

    from appliance import registry
    from appliance.cli import cli
    from tests.registry.conftest import add_adapter

    config, db = home
    for version in (1, 2):
        add_adapter(db, "scope", version)
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    proc = start(config)
    try:
        # promote --force and rollback are done by the daemon, in its process.
        out = runner.invoke(cli, ["promote", "scope", "v1", "--force", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["via"] == "daemon"
        assert registry.active(db, "scope").version == 1
        out = runner.invoke(cli, ["promote", "scope", "v2", "--force", "--json"])
        assert json.loads(out.output)["previous"] == "scope-v1"
        out = runner.invoke(cli, ["rollback", "scope", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output) | {} == {"stage": "scope", "from": "scope-v2",
            "to": "scope-v1", "from_version": 2, "to_version": 1, "via": "daemon"}  # fmt: skip
        assert registry.active(db, "scope").version == 1
        # The daemon's refusal reaches the operator with its hint and exit code.
        out = runner.invoke(cli, ["rollback", "poetry"])
        assert out.exit_code == 2 and "unknown stage" in out.output
        events = [e.action for e in registry.history(db, "scope")]
        assert events == ["promote", "promote", "rollback"]

        # Paused: jobs are queued but not taken; cancel one; resume runs the other.
        out = runner.invoke(cli, ["daemon", "pause"])
        assert out.exit_code == 0 and "paused" in out.output
        out = runner.invoke(cli, ["job", "run", "backup", "--json"])
        backup = json.loads(out.output)["job"]
        ingest = request(config, "ingest")["job"]
        time.sleep(2)
        assert jobs.get(db, backup["id"]).status == "queued"
        out = runner.invoke(cli, ["job", "cancel", str(ingest["id"])])
        assert out.exit_code == 0 and jobs.get(db, ingest["id"]).status == "cancelled"
        assert runner.invoke(cli, ["daemon", "resume"]).exit_code == 0
        finished = wait_done(db, backup["id"])
        assert finished.status == "done" and finished.result["path"].endswith(".db")
        log = runner.invoke(cli, ["job", "log", str(backup["id"])])
        assert log.exit_code == 0 and "done" in log.output
        out = runner.invoke(cli, ["job", "run", "backup", "--wait", "--json"])
        assert out.exit_code == 0 and json.loads(out.output)["job"]["status"] == "done"
        listed = json.loads(runner.invoke(cli, ["job", "list", "--json"]).output)
        assert [j["status"] for j in listed] == ["done", "cancelled", "done"]  # newest first

        status = json.loads(runner.invoke(cli, ["status", "--json"]).output)
        assert status["daemon"]["running"] and status["daemon"]["heavy_slots"] == 1
        assert status["jobs"]["counts"]["done"] == 2
        assert status["resources"]["cpu"]["cores"] >= 1 and status["resources"]["gpus"] == []
        human = runner.invoke(cli, ["status"])
        assert human.exit_code == 0 and "daemon      running" in human.output
    finally:
        stop(proc)
    out = runner.invoke(cli, ["daemon", "pause"])
    assert out.exit_code == 1 and "forged is not running" in out.output


def test_the_socket_refuses_users_outside_the_group(home):
    """0660: a process of another user (nobody) cannot connect."""
    config, _ = home
    if os.geteuid() != 0:
        pytest.skip("needs root to run a probe as another user; the mode is checked above")
    proc = start(config)
    try:
        os.chmod(config.home, 0o755)  # so only the socket's own mode stands in the way
        for parent in config.home.parents:
            if str(parent).startswith("/tmp/"):
                os.chmod(parent, 0o755)
        pid = os.fork()
        if pid == 0:  # the probe: a process of user nobody
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(config.home / "forged.sock"))
                code = 0
            except PermissionError:
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3  # refused
    finally:
        stop(proc)


def test_a_heavy_job_whose_process_dies_without_a_word_fails_and_the_daemon_goes_on(home):
    """Its pipe's EOF is no outcome (it once raised EOFError in the work loop and took the
    daemon down): the job fails with how the process ended, and is retried."""
    from appliance.childproc import Child
    from daemon.forged import Daemon

    config, db = home
    daemon = Daemon(config)
    job, _ = jobs.enqueue(db, "cycle", {}, key="cycle", heavy=True)
    jobs.claim(daemon.db)
    child = Child(os._exit, (3,), config.home / "job.log", name="forged-cycle")
    daemon.children[job.id] = (child, 0)
    child.join()
    daemon._reap()
    job = jobs.get(db, job.id)
    assert not daemon.children
    assert job.error == "the job's process died (exit 3)" and job.status == "queued"
