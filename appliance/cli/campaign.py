"""`forge campaign run|show`: turn a package's commits into training triples."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from appliance.campaign.run import run_campaign
from appliance.campaign.store import CampaignState, summary
from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.packages import corpus
from appliance.packages.corpus import find_package


@click.group()
def campaign() -> None:
    """Run the stages on a package's commits and record what worked."""


@campaign.command()
@click.argument("package_name", metavar="PACKAGE")
@click.option(
    "--commits", type=click.IntRange(min=1), help="Use at most the first N usable commits."
)
@click.option(
    "--samples",
    type=click.IntRange(min=1, max=32),
    help="Stage runs per commit (default: campaign.samples, 3).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def run(package_name: str, commits, samples, as_json: bool) -> None:
    """Run the five stages on the usable commits of PACKAGE, grade each sample in the
    sandbox, and record a triple per sample plus the real commit's synthetic pairs.

    Resumable: units already recorded are skipped; an interrupted run loses at most
    the unit in progress. Exit 0 when every unit ran (whatever the models did).
    """
    config, db = open_forge(sandbox=True)
    package_id = find_package(db, package_name).id
    counts: dict[str, int] = {}
    results = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[outcomes]}"),
        console=err_console,
        disable=as_json,
    )
    with progress:
        task = progress.add_task("grading commits (harness)", total=None, outcomes="")

        def planned(units, usable) -> None:
            progress.update(
                task,
                description=f"{len(usable)} commits, {len(units)} samples to run",
                total=len(units),
                completed=0,
            )

        for result in run_campaign(
            config, db, package_name, commits=commits, samples=samples, on_planned=planned
        ):
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            results.append(result.__dict__)
            progress.update(
                task,
                advance=1,
                outcomes=" ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            )
    state = summary(db, package_id)
    if as_json:
        emit_json({"package": package_name, "ran": results, "summary": state.to_dict()})
        return
    console.print(
        f"ran {len(results)} sample(s): "
        + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to do")
    )
    _print_summary(package_name, state)


def _print_summary(name: str, state: CampaignState) -> None:
    rate = state.resolved_rate
    console.print(
        f"[bold]{escape(name)}[/]: {state.commits} commits, {state.triples} triples, "
        f"resolved {'-' if rate is None else f'{rate:.0%}'}, "
        f"{state.synthetic_pairs} synthetic pairs"
    )
    console.print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in state.outcomes.items()))
    if state.stage_calls:
        console.print(
            "  model calls: " + ", ".join(f"{k} {v}" for k, v in state.stage_calls.items())
        )


@campaign.command()
@click.argument("package_name", metavar="[PACKAGE]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def show(package_name, as_json: bool) -> None:
    """Per package: commits done, triples, resolved rate, outcomes, model calls per stage."""
    config, db = open_forge()
    found = [corpus.find_package(db, package_name)] if package_name else corpus.packages(db)
    states = [(p.name, p.version, summary(db, p.id)) for p in found]
    if as_json:
        emit_json(
            [{"package": name, "version": version} | s.to_dict() for name, version, s in states]
        )
        return
    if not states:
        console.print("no packages in the corpus")
    for name, version, state in states:
        _print_summary(f"{name} {version}", state)
