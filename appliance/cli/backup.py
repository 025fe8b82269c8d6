"""`forge backup` and `forge restore FILE`: the database, copied online and put back."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from appliance.cli.output import console, emit_json, human_bytes
from appliance.config import load_config
from appliance.store.backup import backups, make_backup
from appliance.store.backup import restore as put_back


@click.command()
@click.option("--list", "list_", is_flag=True, help="List the backups instead of making one.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def backup(list_: bool, as_json: bool) -> None:
    """Copy the database into FORGE_HOME/backups/ while Forge runs (SQLite's backup API),
    verified before it is kept. Keeps the newest of each of the last 7 days and 4 weeks."""
    config = load_config()
    config.ensure_dirs()
    if list_:
        found = backups(config)
        if as_json:
            emit_json([b.to_dict() for b in found])
            return
        if not found:
            console.print("no backups yet: forge backup makes one")
        for b in found:
            console.print(
                f"{b.at:%Y-%m-%d %H:%M:%S}  {human_bytes(b.size):>9}  {escape(str(b.path))}"
            )
        return
    made = make_backup(config)
    if as_json:
        emit_json(made.to_dict())
        return
    console.print(f"backed up to {escape(str(made.path))} ({human_bytes(made.size)})")


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def restore(file: Path, as_json: bool) -> None:
    """Put backup FILE in place of the database. Refused while forged runs and for a file
    that is not a sound Forge database; the database it replaces is kept in backups/ as
    forge-…-pre-restore.db. All or nothing."""
    config = load_config()
    config.ensure_dirs()
    restored, previous = put_back(config, file)
    if as_json:
        emit_json({"restored": restored.to_dict(),
                   "previous": previous.to_dict() if previous else None})  # fmt: skip
        return
    console.print(f"restored {escape(str(file))}")
    if previous:
        console.print(f"the database it replaced is kept as {escape(str(previous.path))}")
