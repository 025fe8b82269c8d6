"""`forge rollback STAGE`: put the version in service before (or the base) back at once."""

from __future__ import annotations

import re

import click
from rich.markup import escape

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json
from appliance.errors import UsageError
from appliance.ops import actions


def _target(value: str | None, stage: str) -> tuple[int | None, bool]:
    """--to vN, N, STAGE-vN or base → (version, to_base)."""
    if value is None:
        return None, False
    if value == "base":
        return None, True
    found = re.fullmatch(rf"(?:{re.escape(stage)}-)?v?(\d+)", value)
    if not found:
        raise UsageError(
            f"--to {value!r} names no version", f"give --to v2 (a version of {stage}) or --to base"
        )
    return int(found.group(1)), False


@click.command()
@click.argument("stage")
@click.option("--to", "to", metavar="vN|base", help="The version to put in service, or base.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def rollback(stage: str, to: str | None, as_json: bool) -> None:
    """Take STAGE's active adapter out of service: back to the version in service before
    it (skipping any no longer servable), or the base when none was. Instant: the next
    model call uses it; no file is touched. --to vN picks any servable version."""
    version, to_base = _target(to, stage)
    config, db = open_forge()
    result = actions.rollback(config, db, stage, version, to_base)
    if as_json:
        emit_json(result)
        return
    console.print(f"{escape(result['from'])} → {escape(result['to'])}"
                  + (" (done by forged)" if result["via"] == "daemon" else ""))  # fmt: skip
