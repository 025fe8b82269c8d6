"""`forge data-package list|validate`: data packages (a teacher's rows) on this box."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json
from appliance.datapackages import store
from appliance.datapackages.validate import validate_data_package
from appliance.datasets.versions import rows_by_origin


@click.group(name="data-package")
def data_package() -> None:
    """Data packages: SFT and DPO rows from a teacher, ingested like repo packages
    (drop them into the ingest folder; docs/data-package.md has the format)."""


@data_package.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_(as_json: bool) -> None:
    """The ingested data packages: where their rows come from, how many of each stage and
    kind, and how many are in datasets now (`forge datasets build` takes them)."""
    _, db = open_forge()
    in_datasets = rows_by_origin(db)
    found = [
        p.to_dict() | {"in_datasets": in_datasets.get(p.origin, 0)} for p in store.packages(db)
    ]
    if as_json:
        emit_json(found)
        return
    if not found:
        console.print("no data packages: drop one into the ingest folder, then forge ingest")
    for p in found:
        rows = ", ".join(f"{key} {n}" for key, n in p["rows"].items())
        console.print(
            f"{escape(p['name'])} {escape(p['version'])}  by {escape(p['model'])} "
            f"({escape(p['generator'])}, {escape(p['license'])}, {escape(p['created'])})"
        )
        console.print(f"    {escape(rows)}; {p['in_datasets']} in datasets now")


@data_package.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def validate(directory: Path, as_json: bool) -> None:
    """Every check ingest makes of a data package, against this box's corpus (which
    commits exist, which are held out or eval); nothing is ingested. Exit 1 on a problem."""
    config, db = open_forge()
    report = validate_data_package(directory, config, db)
    if as_json:
        emit_json(report.to_dict())
    else:
        for problem in report.problems:
            console.print(f"[red]✗[/] {escape(problem.line())}")
        if report.ok:
            rows = ", ".join(f"{k} {n}" for k, n in report.to_dict()["rows"].items())
            console.print(f"[green]ok[/] {escape(report.manifest.label)}: {escape(rows)}")
    if not report.ok:
        raise SystemExit(1)
