"""`forge tui`: the operator's dashboard (the `tui` package, Textual)."""

from __future__ import annotations

import importlib

import click

from appliance.config import load_config


@click.command()
def tui() -> None:
    """The dashboard: daemon, jobs, packages, campaigns and adapters on one screen, live.

    Without a daemon it shows everything read-only, with a banner; promote and rollback
    go through the daemon's control socket when it runs. q quits.
    """
    config = load_config()
    config.ensure_dirs()
    # Imported by name: `tui` sits on top of `appliance`, which imports no UI.
    importlib.import_module("tui.app").run(config)
