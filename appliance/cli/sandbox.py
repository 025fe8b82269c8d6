"""`forge sandbox image build`: the docker sandbox's image, made offline from this machine."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from appliance.cli.output import console, emit_json, err_console, human_bytes


@click.group()
def sandbox() -> None:
    """The sandbox that runs repository code (bubblewrap by default, docker optional)."""


@sandbox.group()
def image() -> None:
    """The docker backend's image."""


@image.command("build")
@click.option("--tag", default=None, help="Image tag (default: forge-sandbox:latest).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def build(tag: str | None, as_json: bool) -> None:
    """Make the docker sandbox image from this machine's own files (its Python, git, a shell
    and their libraries) with `docker import`: no registry is needed. Does nothing when an
    image with the same contents already has the tag. Prints what to put in forge.toml."""
    # The docker SDK (~0.1 s) is loaded only by the command that needs it, not by --help.
    from appliance.sandbox.image import DEFAULT_TAG, build_image, forge_toml

    tag = tag or DEFAULT_TAG
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=as_json,
    )
    task = progress.add_task("gathering files", total=None)

    def report(step: str, done: int, total: int) -> None:
        progress.update(task, description=step, completed=done, total=total or None)

    with progress:
        made = build_image(tag, progress=report)
    if as_json:
        emit_json(made.to_dict())
        return
    what = "built" if made.built else "already up to date:"
    console.print(
        f"{what} {escape(made.tag)} ({made.image_id[:19]}, {human_bytes(made.size_bytes)} of files)"
    )
    console.print("to use it, put this in forge.toml:")
    console.print(escape(forge_toml(made.tag)), end="")
