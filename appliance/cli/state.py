"""`forge init`, `forge status`, `forge doctor`: the appliance's state and health."""

from __future__ import annotations

import click
from rich.markup import escape

from appliance.cli.output import console, emit_json, human_bytes
from appliance.config import load_config


@click.command()
def init() -> None:
    """Create FORGE_HOME's folders and database (install.sh runs this; safe to repeat)."""
    from appliance.store import open_db
    from appliance.store.migrations import migrate

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
    """What the appliance holds: corpus, quarantine, last ingest, database, disk."""
    from appliance.status import gather
    from appliance.store import open_db

    config = load_config()
    config.ensure_dirs()
    data = gather(config, open_db(config))
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
    daemon = data["daemon"]
    if daemon["running"]:
        jobs = f"{len(daemon['running_jobs'])} running, {daemon['queued']} queued"
        console.print(f"daemon      {daemon['state']} (pid {daemon['pid']}), {jobs}")
    else:
        console.print("daemon      not running: commands work in the foreground")
    active = ", ".join(data["adapters"].values()) or "none (the base serves every stage)"
    console.print(f"adapters    active: {escape(active)}")
    console.print(f"database    {human_bytes(data['database']['bytes'])}")
    console.print(
        f"disk        {human_bytes(data['disk']['free_bytes'])} free "
        f"of {human_bytes(data['disk']['total_bytes'])}"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def doctor(as_json: bool) -> None:
    """Check the box: database, sqlite-vec, llama.cpp, model files, uv, bwrap, disk.

    Exits 1 when anything is wrong, after saying what and how to fix it.
    """
    from appliance.doctor import run_checks

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
