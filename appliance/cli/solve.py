"""`forge solve`, `forge runs list|show` and `forge feedback`: the stages on the operator's
own task, the recorded runs, and the operator's word on them."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.errors import UsageError
from appliance.packages import corpus
from appliance.packages.split import Holdout
from appliance.solve import leak, runs, solver, source
from appliance.solve.feedback import give_feedback
from appliance.solve.runs import SolveRun

EXIT_NO_DIFF = 3  # no usable diff, or (--test) the diff broke tests
EXIT_INFRA = 4  # --test could not run the tests (environment, sandbox)
OUTPUT_LINES = 40  # lines of a stage's answer shown


@click.command()
@click.option(
    "--package",
    "package_name",
    required=True,
    metavar="NAME",
    help="The ingested package the repository belongs to (its environment and tests).",
)
@click.option("--repo", "repo_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Your checkout of the repository (read only; its HEAD commit is solved). "
              "Default: the package's newest commit.")  # fmt: skip
@click.argument("task")
@click.option(
    "--test",
    "test",
    is_flag=True,
    help="Run the package's tests in the sandbox without and with the diff.",
)
@click.option("--apply", "apply", is_flag=True,
              help="Apply the diff to --repo PATH, only if its work tree is clean "
              "(and, with --test, only if no test got worse).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def solve(package_name: str, repo_path, task: str, test: bool, apply: bool, as_json: bool) -> None:
    """Run task analysis → scope → precision → plan → code on TASK with the active
    adapters, over the package's newest commit or your checkout, and show each stage's
    answer and the diff. Every solve is a recorded run (forge runs list).

    Exit 0: a diff (with --test: no test got worse; with --apply: applied); 3: no usable
    diff, or the diff broke tests; 4: the tests could not run; 1: an error (nothing
    applied); 2: bad usage.
    """
    if apply and repo_path is None:
        raise UsageError("--apply needs --repo PATH: the checkout to apply the diff to")
    solver.check_task(task)
    config, db = open_forge(sandbox=test)
    if apply:  # refuse before minutes of model calls, not after
        source.check_clean(source.toplevel(repo_path))
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=err_console, disable=as_json, transient=True)  # fmt: skip
    with progress:
        bar = progress.add_task("starting", total=None)
        run = solver.solve(
            config, db, package_name, task, repo_path=repo_path, test=test,
            on_progress=lambda text: progress.update(bar, description=escape(text)),
        )  # fmt: skip
    applied, refusal = None, None
    if apply and run.outcome == "diff":
        if run.test is not None and run.test["verdict"] != "passed":
            refusal = f"not applied: the diff did not pass its tests ({run.test['verdict']})"
        else:
            applied = solver.apply_run(db, run)
            run = runs.get(db, run.id)
    if as_json:
        emit_json(run.to_dict() | {"applied": applied})
    else:
        _show_run(run)
        if applied is not None:
            console.print(f"[green]applied[/] to {escape(run.repo_path)}: {', '.join(applied)}")
        if refusal:
            console.print(f"[yellow]{escape(refusal)}[/]")
        console.print(
            f"run {run.id} recorded. Tell Forge how it did: "
            f"forge feedback {run.id} good|bad [--patch FILE]"
        )
    raise SystemExit(_exit_code(run))


def _exit_code(run: SolveRun) -> int:
    if run.outcome != "diff":
        return EXIT_NO_DIFF
    if run.test is None or run.test["verdict"] == "passed":
        return 0
    return EXIT_INFRA if run.test["verdict"] == "infra" else EXIT_NO_DIFF


def _show_run(run: SolveRun) -> None:
    where = run.repo_path or "the package's repository"
    console.rule(f"run {run.id}: {escape(run.package)} at {run.snapshot_sha[:12]}")
    console.print(f"[bold]task[/]: {escape(run.task)}")
    console.print(f"[dim]repository: {escape(where)}; started {run.started_at}[/]")
    for record in run.stages:
        adapter = record.adapter or "base"
        console.print(f"\n[bold cyan]{record.stage.replace('_', ' ')}[/] [dim]({adapter})[/]")
        if record.error:
            console.print(f"  [red]{escape(record.error)}[/]")
        if record.output is not None:
            lines = json.dumps(record.output, indent=2).splitlines()
            more = len(lines) - OUTPUT_LINES
            console.print(escape("\n".join(lines[:OUTPUT_LINES])))
            if more > 0:
                console.print(f"  [dim]… {more} more line(s): forge runs show {run.id} --json[/]")
    console.print()
    if run.patch:
        console.rule("diff")
        console.print(Syntax(run.patch, "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print(f"[yellow]no diff[/]: {escape(run.reason)}")
    if run.test is not None:
        colour = "green" if run.test["verdict"] == "passed" else "red"
        console.print(
            f"[bold]tests[/]: [{colour}]{run.test['verdict']}[/]: {escape(run.test['reason'])}"
        )
        for test_id in run.test.get("broken", [])[:10]:
            console.print(f"  broken: {escape(test_id)}")


@click.group(name="runs")
def runs_() -> None:
    """The recorded solve runs (forge solve) and their feedback."""


@runs_.command(name="list")
@click.option("--package", "package_name", metavar="NAME", help="Only this package's runs.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_runs(package_name, limit: int, as_json: bool) -> None:
    """Solve runs, newest first: package, snapshot, outcome, test verdict, feedback."""
    config, db = open_forge()
    package_id = corpus.find_package(db, package_name).id if package_name else None
    found = runs.runs(db, package_id=package_id, limit=limit)
    if as_json:
        emit_json([_summary(r) for r in found])
        return
    if not found:
        console.print('no solve runs yet: forge solve --package NAME "task" makes one')
        return
    table = Table("run", "started", "package", "snapshot", "outcome", "tests", "feedback", "task")
    for r in found:
        table.add_row(
            str(r.id), r.started_at, escape(r.package), r.snapshot_sha[:10], r.outcome,
            r.test["verdict"] if r.test else "-", r.feedback or "-",
            escape(r.task.splitlines()[0][:60]),
        )  # fmt: skip
    console.print(table)


def _summary(run: SolveRun) -> dict:
    return {
        "id": run.id,
        "package": run.package,
        "repo_path": run.repo_path,
        "snapshot_sha": run.snapshot_sha,
        "task": run.task,
        "outcome": run.outcome,
        "test": run.test["verdict"] if run.test else None,
        "applied_at": run.applied_at,
        "feedback": run.feedback,
        "started_at": run.started_at,
    }


@runs_.command(name="show")
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def show_run(run_id: int, as_json: bool) -> None:
    """One run: each stage's context and answer, the diff, the tests, the feedback, and
    whether its rows may enter a dataset now (and why not)."""
    config, db = open_forge()
    run = runs.get(db, run_id)
    held_back = leak.untrainable_reason(config, db, run, Holdout.of(config, db))
    if as_json:
        emit_json(run.to_dict() | {"held_back": held_back})
        return
    _show_run(run)
    if run.applied_at:
        console.print(f"applied to {escape(run.repo_path or '')} at {run.applied_at}")
    if run.feedback is None:
        console.print(f"no feedback yet: forge feedback {run.id} good|bad [--patch FILE]")
    else:
        patch = " with a corrected patch" if run.feedback_patch else ""
        console.print(f"[bold]feedback[/]: {run.feedback}{patch} ({run.feedback_at})")
    if held_back:
        console.print(f"[yellow]its rows do not enter a dataset now[/]: {escape(held_back)}")


@click.command()
@click.argument("run_id", metavar="RUN", type=int)
@click.argument("verdict", type=click.Choice(runs.VERDICTS))
@click.option("--patch", "patch_file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE", help="The corrected change: a unified diff against the run's "
              "snapshot, or a JSON list of {path, search, replace} edits.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def feedback(run_id: int, verdict: str, patch_file, as_json: bool) -> None:
    """Say whether solve run RUN was good or bad, optionally with the corrected patch.
    `forge datasets build` turns it into rows with provenance "operator": a good run's
    answers (or the patch's) as SFT rows, a bad one's as the rejected side of DPO pairs.
    A patch that does not apply to the run's snapshot is refused and nothing is stored."""
    config, db = open_forge()
    result = give_feedback(config, db, run_id, verdict, patch_file)
    if as_json:
        emit_json(result.to_dict())
        return
    run = result.run
    patch = " with the corrected patch" if run.feedback_patch else ""
    console.print(f"run {run.id}: feedback [bold]{verdict}[/]{patch} stored")
    if result.held_back:
        err_console.print(
            f"[yellow]warning[/]: its rows will not enter a dataset while this holds: "
            f"{escape(result.held_back)}"
        )
    else:
        console.print("forge datasets build takes it into the next dataset versions")
