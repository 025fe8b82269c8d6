"""`forge gc` and `forge alerts`: keeping the box in shape while nobody watches it."""

from __future__ import annotations

import click
from rich.markup import escape

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, human_bytes
from appliance.ops import alerts as alert_store
from appliance.ops.gc import collect


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def gc(dry_run: bool, as_json: bool) -> None:
    """Apply the retention of forge.toml's [retention]: checkpoints of finished training
    runs (and of unfinished ones left for failed_run_days), environments unused and not
    needed by the corpus, old job logs and cycle reports, backups outside their retention,
    and old model calls nothing refers to. Adapters, dataset versions, the corpus and gate
    decisions are never removed. forged runs it daily (daemon.gc_at)."""
    config, db = open_forge()
    report = collect(config, db, dry_run=dry_run)
    if as_json:
        emit_json(report.to_dict())
        return
    verb = "would free" if dry_run else "freed"
    for removal in report.removals:
        console.print(
            f"{removal.what:<13} {human_bytes(removal.bytes):>9}  {escape(removal.path)}"
            f"  [dim]{escape(removal.why)}[/]"
        )
    for line in report.skipped:
        console.print(f"[yellow]left[/]          {escape(line)}")
    kinds = ", ".join(f"{v['count']} {k}" for k, v in report.by_kind().items()) or "nothing"
    console.print(f"{verb} {human_bytes(report.freed_bytes)}: {kinds}")


@click.group(invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include recently cleared alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def alerts(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """The alerts forged raised: open ones (raised, then acknowledged), newest first.
    What each means and what to do: docs/operations.md. Exit 1 while any is raised and
    not acknowledged."""
    if ctx.invoked_subcommand is not None:
        return
    _config, db = open_forge()
    found = alert_store.alerts(db, cleared=show_all)
    if as_json:
        emit_json([a.to_dict() for a in found])
    elif not found:
        console.print("no open alerts")
    for a in [] if as_json else found:
        colour = {"raised": "red", "acknowledged": "yellow"}.get(a.state, "dim")
        subject = f" {a.subject}" if a.subject else ""
        console.print(
            f"#{a.id:<4} [{colour}]{a.state:<12}[/] {a.severity:<8} {a.rule}{escape(subject)}"
            f"  since {a.raised_at}"
        )
        console.print(f"      {escape(a.message)}")
    if any(a.state == "raised" for a in found):
        raise SystemExit(1)


@alerts.command()
@click.argument("alert_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def ack(alert_id: int, as_json: bool) -> None:
    """Acknowledge alert ALERT_ID: it stays quiet (no banner, no hook) until its rule
    stops finding it; found again after that, it is a new alert."""
    _config, db = open_forge()
    alert = alert_store.acknowledge(db, alert_id)
    if as_json:
        emit_json(alert.to_dict())
        return
    console.print(f"alert {alert.id} ({alert.rule}) acknowledged at {alert.acknowledged_at}")
