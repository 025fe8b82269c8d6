"""`forge job …` and `forge daemon …`: the daemon's queue from the command line.

`forge job run KIND` asks forged to run a job now, or runs it in the foreground when no
daemon answers; `forge job log N -f` follows a job's log; `forge daemon pause|resume`
stop and restart the taking of new jobs (what runs finishes).
"""

from __future__ import annotations

import time

import click
from rich.markup import escape

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.errors import ForgeError, UsageError
from appliance.ops import actions, jobs
from appliance.ops.work import KINDS, run_job

BOOLEANS = {"true": True, "false": False, "yes": True, "no": False}


def _args(pairs: tuple[str, ...]) -> dict:
    """--arg stage=scope --arg version=2 --arg demo=true → {"stage": "scope", "version": 2,
    "demo": True}: digits are numbers, true/false are booleans, the rest is text."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--arg {pair!r} is not KEY=VALUE", "e.g. --arg stage=scope")
        if value.isdigit():
            out[key] = int(value)
        elif value.lower() in BOOLEANS:
            out[key] = BOOLEANS[value.lower()]
        else:
            out[key] = value
    return out


@click.group()
def job() -> None:
    """The daemon's jobs: list, run now, cancel, follow a log."""


@job.command(name="list")
@click.option("--status", type=click.Choice(["queued", "running", "done", "failed", "cancelled"]),
              multiple=True, help="Only jobs with this status (repeatable).")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_(status: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Jobs, newest first: kind, status, attempts, progress, error."""
    _, db = open_forge()
    found = jobs.jobs(db, status or jobs.STATUSES, limit)
    if as_json:
        emit_json([j.to_dict() for j in found])
        return
    if not found:
        console.print("no jobs yet: forged queues them on its schedules; forge job run KIND")
    for j in found:
        colour = {"done": "green", "failed": "red", "running": "cyan", "queued": "yellow"}.get(
            j.status, "dim"
        )
        p = j.progress
        progress = f" {p.get('step', '')} {p.get('done', '')}/{p.get('total', '')}" if p else ""
        console.print(
            f"#{j.id:<4} {j.kind:<9} [{colour}]{j.status:<9}[/] attempt {j.attempts}/"
            f"{j.max_attempts}  queued {j.queued_at}{escape(progress.rstrip('/ '))}"
        )
        if j.error:
            console.print(f"      {escape(j.error[:200])}")


@job.command()
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.option("--arg", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A job argument (promote: stage=…, version=…; cycle: commits=…).")  # fmt: skip
@click.option("--wait", is_flag=True, help="Follow the job until it finishes (with a daemon).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def run(kind: str, pairs: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Run a job of KIND now: queued with forged when it runs (at the front of what is
    due), else run here in the foreground. Exit 1 when the job failed."""
    config, db = open_forge()
    args = _args(pairs)
    if kind == "promote" and not {"stage", "version"} <= set(args):
        raise UsageError("a promote job needs --arg stage=STAGE --arg version=N")
    answer = actions.queue_job(config, kind, args)
    if answer is None:
        err_console.print(f"no daemon runs: running {kind} in the foreground")
        result = run_job(str(config.home), kind, args)
        if as_json:
            emit_json({"via": "foreground", "kind": kind, "result": result})
        else:
            console.print(f"{kind} done")
        return
    found = answer["job"]
    if not wait:
        if as_json:
            emit_json({"via": "daemon", **answer})
        else:
            state = "queued" if answer["queued"] else f"already {found['status']}"
            console.print(f"job {found['id']} ({kind}) {state}; follow it: forge job log "
                          f"{found['id']} -f")  # fmt: skip
        return
    finished = actions.wait(db, found["id"])
    if as_json:
        emit_json({"via": "daemon", "job": finished.to_dict()})
    else:
        console.print(f"job {finished.id} ({kind}) {finished.status}"
                      + (f": {escape(finished.error)}" if finished.error else ""))  # fmt: skip
    if finished.status != "done":
        raise SystemExit(1)


@job.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def cancel(job_id: int, as_json: bool) -> None:
    """Cancel a queued or running job (a running one stops at its next checkpoint)."""
    config, db = open_forge()
    answer = actions.ask(config, "cancel", id=job_id)
    cancelled = jobs.get(db, job_id) if answer else jobs.cancel(db, job_id)
    if as_json:
        emit_json(cancelled.to_dict())
    else:
        console.print(f"job {job_id} ({cancelled.kind}) cancelled")


@job.command()
@click.argument("job_id", type=int)
@click.option("-n", "--lines", type=click.IntRange(min=0), default=40, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job finishes.")
def log(job_id: int, lines: int, follow: bool) -> None:
    """The log of a job's run (runs/jobs/job-N.log): its last lines, or followed."""
    config, db = open_forge()
    found = jobs.get(db, job_id)
    if not found.log:
        raise ForgeError(f"job {job_id} ({found.kind}) has no log yet: it is {found.status}",
                         "a job's log starts when it starts running")  # fmt: skip
    path = config.home / found.log
    if not path.is_file():
        raise ForgeError(f"the log of job {job_id} is gone ({path})")
    with path.open(errors="replace") as fh:
        for line in fh.readlines()[-lines:] if lines else []:
            click.echo(line, nl=False)
        while follow:
            line = fh.readline()
            if line:
                click.echo(line, nl=False)
                continue
            if jobs.get(db, job_id).status not in ("queued", "running"):
                click.echo(fh.read(), nl=False)
                break
            time.sleep(0.5)


@click.group()
def daemon() -> None:
    """forged itself: pause and resume the taking of new jobs."""


def _toggle(command: str) -> None:
    config, _ = open_forge()
    answer = actions.ask_daemon(config, command, f"there is nothing to {command}")
    console.print(f"forged is {answer['daemon']['state']}")


@daemon.command()
def pause() -> None:
    """Take no new jobs (the running ones finish); schedules still queue theirs."""
    _toggle("pause")


@daemon.command()
def resume() -> None:
    """Take jobs again after a pause."""
    _toggle("resume")
