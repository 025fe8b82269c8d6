"""`forge init`, `forge status`, `forge doctor`: the appliance's state and health."""

from __future__ import annotations

import click
from rich.markup import escape

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, human_bytes
from appliance.config import load_config
from appliance.doctor import run_checks
from appliance.status import gather
from appliance.store import open_db
from appliance.store.migrations import migrate


@click.command()
def init() -> None:
    """Create FORGE_HOME's folders and database (install.sh runs this; safe to repeat)."""
    config = load_config()
    config.ensure_dirs()
    db = open_db(config, migrate=False)
    ran = migrate(db)
    click.echo(
        f"FORGE_HOME {config.home}: "
        + (f"applied {', '.join(ran)}" if ran else "database up to date")
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(as_json: bool) -> None:
    """What the appliance holds and does: corpus, quarantine, last ingest, the daemon and
    its jobs (running with progress, queued, recent failures), active adapters, database,
    CPU, memory, disk and GPUs."""
    config, db = open_forge()
    data = gather(config, db)
    if as_json:
        emit_json(data)
        return
    corpus = data["corpus"]
    console.print(f"[bold]Forge[/] at {escape(data['home'])}")
    console.print(f"corpus      {corpus['packages']} package(s), {corpus['commits']} commits")
    for item in corpus["items"]:
        console.print(
            f"  {item['name']} {item['version']}  {item['commits']} commits"
            f"  split={item['split'] or '-'}  since {item['ingested_at']}"
        )
        if item["graded"]:
            console.print(
                f"    graded {item['graded']}: {item['usable']} usable tasks"
                + (f", {item['infra']} infrastructure failures" if item["infra"] else "")
            )
    console.print(f"quarantine  {data['quarantine']['packages']} package(s)")
    for name in data["quarantine"]["items"][-5:]:
        console.print(f"  {escape(name)}")
    last = data["ingest"]["last"]
    if last:
        console.print(f"last ingest {last['at']}  {escape(last['source'])}: {last['outcome']}")
    else:
        console.print("last ingest never")
    if data["ingest"]["waiting"]:
        console.print(
            f"ingest/     {len(data['ingest']['waiting'])} waiting: "
            + escape(", ".join(data["ingest"]["waiting"]))
        )
    _print_daemon(data["daemon"], data["jobs"])
    _print_serve(data["serve"])
    _print_alerts(data["alerts"])
    active = ", ".join(data["adapters"].values()) or "none (the base serves every stage)"
    console.print(f"adapters    active: {escape(active)}")
    console.print(f"database    {human_bytes(data['database']['bytes'])}")
    _print_resources(data["resources"])


def _job_line(job: dict) -> str:
    progress = job["progress"]
    done = ""
    if progress.get("total"):
        done = f" {progress.get('done', 0)}/{progress['total']}"
    step = f"  {progress.get('step', '')}{done} {progress.get('text', '')}".rstrip()
    return f"#{job['id']} {job['kind']}{step}"


def _print_daemon(daemon: dict, jobs: dict) -> None:
    if daemon["running"]:
        nxt = ", ".join(
            f"{name} {when[11:16]}" for name, when in sorted(daemon["next_runs"].items()) if when
        )
        console.print(f"daemon      {daemon['state']} (pid {daemon['pid']}); next: {nxt or '-'}")
    else:
        why = f" ({escape(daemon['error'])})" if daemon.get("error") else ""
        console.print(f"daemon      not running{why}: commands work in the foreground")
    counts = jobs["counts"]
    console.print(
        f"jobs        {counts['running']} running, {counts['queued']} queued, "
        f"{counts['done']} done, {counts['failed']} failed"
    )
    for job in jobs["running"]:
        console.print(f"  running   {escape(_job_line(job))}  (log {escape(job['log'] or '-')})")
    for job in jobs["queue"][:5]:
        waiting = job["progress"].get("waiting")
        why = f": [yellow]{escape(waiting)}[/]" if waiting else ""
        console.print(f"  queued    #{job['id']} {job['kind']}{why}")
    for job in jobs["recent_failures"][:3]:
        state = "failed" if job["status"] == "failed" else "retrying"
        console.print(
            f"  [red]{state:<9}[/] #{job['id']} {job['kind']} (attempt {job['attempts']}/"
            f"{job['max_attempts']}): {escape((job['error'] or '')[:120])}"
        )


def _print_serve(serve: dict) -> None:
    if not serve["running"]:
        console.print("serve       not running (forge serve)")
        return
    state = f"[yellow]paused: {escape(serve['paused'])}[/]" if serve["paused"] else "serving"
    console.print(
        f"serve       {state} at {escape(serve['url'])} (pid {serve['pid']}): "
        f"{serve['served']} answered, {serve['refused']} refused, {serve['waiting']} waiting"
    )


def _print_alerts(alerts: list[dict]) -> None:
    raised = [a for a in alerts if a["state"] == "raised"]
    if not alerts:
        console.print("alerts      none")
        return
    console.print(
        f"alerts      {len(raised)} raised, {len(alerts) - len(raised)} acknowledged"
        " (forge alerts; docs/operations.md says what to do)"
    )
    for a in raised[:5]:
        console.print(f"  [red]#{a['id']:<4}[/] {a['rule']}: {escape(a['message'][:140])}")


def _print_resources(res: dict) -> None:
    cpu, memory, disk = res["cpu"], res["memory"], res["disk"]
    console.print(
        f"cpu         {cpu['percent']:.0f}% of {cpu['cores']} cores (load {cpu['load'][0]:.2f})"
    )
    console.print(
        f"memory      {human_bytes(memory['used_bytes'])} used of "
        f"{human_bytes(memory['total_bytes'])}"
    )
    console.print(
        f"disk        {human_bytes(disk['free_bytes'])} free of {human_bytes(disk['total_bytes'])}"
    )
    for gpu in res["gpus"]:
        console.print(
            f"gpu {gpu['index']}       {escape(gpu['name'])}: {gpu['util_percent']}% busy, "
            f"{human_bytes(gpu['memory_used_bytes'])} of {human_bytes(gpu['memory_total_bytes'])}, "
            f"{gpu['temperature_c']} °C"
        )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def doctor(as_json: bool) -> None:
    """Check the box: database, sqlite-vec, llama.cpp, model files, uv, bwrap, disk.

    Exits 1 when anything is wrong, after saying what and how to fix it.
    """
    checks = run_checks(load_config())
    failed = [c for c in checks if not c.ok]
    if as_json:
        emit_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    else:
        for check in checks:
            mark = "[green]ok  [/]" if check.ok else "[red]FAIL[/]"
            console.print(f"{mark} {escape(check.name):<12} {escape(check.detail)}")
            if not check.ok and check.fix:
                console.print(f"     {'':<12} → {escape(check.fix)}")
        console.print("all checks passed" if not failed else f"{len(failed)} problem(s) found")
    if failed:
        raise SystemExit(1)
