"""What the operator asks Forge to do from the dashboard. Each call goes through
`appliance.ops.actions` (the daemon's control socket when forged runs, the foreground when it
does not, exactly as `forge` does) on a connection of its own, so it can run in a worker
thread. Errors are ForgeErrors, for the dashboard to show in a notification."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from appliance.config import Config
from appliance.ops import actions
from appliance.store import open_db


@contextmanager
def _db(config: Config) -> Iterator:
    database = open_db(config, migrate=False)
    try:
        yield database
    finally:
        database.conn.close()


def rollback(config: Config, stage: str) -> dict:
    with _db(config) as db:
        return actions.rollback(config, db, stage)


def force_promote(config: Config, stage: str, version: int) -> dict:
    with _db(config) as db:
        return actions.force_promote(config, db, stage, version)


def promote(config: Config, stage: str, version: int) -> dict:
    """Through the gate: a promote job in forged when it runs (it evaluates, a heavy job),
    else the evaluation here in the foreground (loads the model: run this in a worker)."""
    answer = actions.queue_job(config, "promote", {"stage": stage, "version": version})
    if answer is not None:
        return {"via": "daemon", **answer}
    with _db(config) as db:
        return actions.gate_promote_now(config, db, stage, version) | {"via": "foreground"}


def pause(config: Config, pause: bool) -> dict:
    command = "pause" if pause else "resume"
    why = "there is nothing to pause or resume"
    return actions.ask_daemon(config, command, why)["daemon"]


def cancel(config: Config, job_id: int) -> dict:
    why = "jobs are cancelled by the daemon"
    return actions.ask_daemon(config, "cancel", why, id=job_id)["job"]


def run_job(config: Config, kind: str) -> dict:
    answer = actions.queue_job(config, kind)
    if answer is None:
        raise actions.NoDaemon(
            f"forged is not running: a {kind} job needs the daemon",
            f"start it (systemctl start forged), or run forge {kind} here",
        )
    return answer
