"""`forge datasets build|list|show|export`: the per-stage training datasets."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.datasets.versions import KINDS, _check_stage, named, origins_of, rows_of, versions
from appliance.datasets.versions import build as build_version
from appliance.datasets.versions import export as export_rows
from appliance.errors import UsageError
from appliance.stages import STAGES

KIND = click.Choice(["sft", "dpo"])


@click.group()
def datasets() -> None:
    """Per-stage SFT and DPO datasets built from campaigns; versions only grow."""


def _one_version(command):
    """The options that name one dataset version: STAGE, --kind and --version."""
    command = click.option(
        "--version", "number", type=click.IntRange(min=1), help="Default: the latest."
    )(command)
    command = click.option("--kind", type=KIND, default="sft", show_default=True)(command)
    return click.argument("stage")(command)


def _line(v) -> str:
    mark = "[green]ok[/]" if v.status == "ok" else "[red]failed gates[/]"
    dropped = f", {v.dropped_rows} dropped: held out now" if v.dropped_rows else ""
    return f"{v.name:24} {v.rows:5d} rows ({v.new_rows} new{dropped})  {mark}  " + ", ".join(
        f"{k} {rate:.0%}" for k, rate in v.gates.items()
    )


@datasets.command()
@click.argument("stages", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def build(stages, as_json: bool) -> None:
    """Add what the campaigns produced since the last version, as a new version per stage
    and kind (all stages unless named). A version that fails its quality gates is kept
    and marked; training refuses it."""
    config, db = open_forge()
    made = []
    for stage in stages or STAGES:
        for kind in KINDS:
            version = build_version(config, db, stage, kind)
            if version is not None:
                made.append(version)
    if as_json:
        emit_json([v.to_dict() for v in made])
        return
    if not made:
        console.print("nothing new: every dataset is current")
    for v in made:
        console.print(_line(v))
        for reason in v.reasons:
            console.print(f"    {escape(reason)}")
    held = {h["run"]: h["reason"] for v in made for h in v.held_back}
    for run, reason in sorted(held.items()):
        console.print(f"held back: solve run {run}: {escape(reason)}")


@datasets.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_(as_json: bool) -> None:
    """Every dataset version of every stage."""
    _, db = open_forge()
    found = versions(db)
    if as_json:
        emit_json([v.to_dict() for v in found])
        return
    if not found:
        console.print("no datasets yet: run a campaign, then forge datasets build")
    for v in found:
        console.print(_line(v))


@datasets.command()
@_one_version
@click.option("--rows", "show_rows", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many rows to print.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def show(stage: str, kind: str, number, show_rows: int, as_json: bool) -> None:
    """One dataset version: its gates and some of its rows with their provenance."""
    _check_stage(stage, kind)
    _, db = open_forge()
    found = [v for v in versions(db, stage) if v.kind == kind]
    if number is not None:
        found = [v for v in found if v.version == number]
    if not found:
        raise UsageError(f"no {kind} dataset for {stage} yet", "forge datasets build")
    v = found[-1]
    rows = rows_of(db, stage, kind, v.version)
    if as_json:
        emit_json(v.to_dict() | {"rows_shown": [r.to_dict() for r in rows[:show_rows]]})
        return
    console.print(_line(v))
    for reason in v.reasons:
        console.print(f"    {escape(reason)}")
    for row in rows[:show_rows]:
        answer = row.completion or row.chosen
        console.print(f"  [{escape(row.task)}] {escape(row.source)}: {escape(answer[:100])}")


@datasets.command()
@_one_version
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export(stage: str, kind: str, number, output: Path) -> None:
    """Write a dataset version to a JSONL file (one row per line, with provenance)."""
    config, db = open_forge()
    count = export_rows(config, db, stage, kind, number, output)
    console.print(f"wrote {count} rows to {escape(str(output))}")


@datasets.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def sources(name: str | None, as_json: bool) -> None:
    """What each dataset version took from where: the rows it includes per origin
    (campaign, import:NAME-VERSION for a data package's rows), the new rows it took from
    each, and the rows it left out or dropped, with the reason. NAME: a version
    (scope-sft-v2) or a stage; default all."""
    _, db = open_forge()
    found = [
        v.to_dict() | {"included": origins_of(db, v)} | _recorded(v.sources)
        for v in named(db, name)
    ]
    if as_json:
        emit_json(
            [{k: v[k] for k in ("name", "rows", "included", "taken", "dropped")} for v in found]
        )
        return
    if not found:
        console.print("no datasets yet: run a campaign or ingest a data package, then build")
    for v in found:
        included = ", ".join(f"{origin} {n}" for origin, n in v["included"].items()) or "none"
        taken = ", ".join(f"{origin} {n}" for origin, n in v["taken"].items()) or "nothing new"
        console.print(f"{v['name']:24} {v['rows']:5d} rows: {escape(included)}")
        console.print(f"    took: {escape(taken)}")
        for d in v["dropped"]:
            console.print(
                f"    left out {d['rows']} of {escape(d['origin'])}: {escape(d['reason'])}"
            )


def _recorded(record: dict) -> dict:
    """What a version recorded of its sources ('{}' for versions made before they were)."""
    return {"taken": record.get("taken", {}), "dropped": record.get("dropped", [])}


@datasets.command()
@click.argument("stages", nargs=-1)
@click.option(
    "--max-pairs",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Pairs judged per stage for the calibration, and again for the labels.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def critic(stages, max_pairs: int, as_json: bool) -> None:
    """Calibrate the critic (the served bases as A/B judges) on the answer pairs the
    harness decided, and label the pairs it could not (neither sample resolved, alike in
    alignment). The next `forge datasets build` takes the labels as DPO rows (origin
    critic) only when the Wilson lower bound of the critic's agreement with the harness
    is above datasets.min_critic_agreement. Stages without a decided pair are skipped.

    Exit 0: every stage calibrated; 3: none could be (no decided pairs)."""
    # The pool loads llama.cpp: only this command of the datasets group needs it.
    from appliance.datasets import critic as critic_
    from appliance.packages.split import Holdout
    from appliance.serving.pool import ModelPool

    config, db = open_forge()
    for stage in stages:
        _check_stage(stage, "dpo")
    threshold = config.settings.datasets.min_critic_agreement
    done, skipped = [], []
    pool = ModelPool.from_config(config, source=critic_.ORIGIN)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), console=err_console, disable=as_json,
                        transient=True)  # fmt: skip
    try:
        with progress:
            bar = progress.add_task("starting", total=None)

            def on_progress(text: str, i: int, n: int) -> None:
                progress.update(bar, description=escape(text), completed=i, total=n)

            holdout = Holdout.of(config, db)
            for stage in stages or STAGES:
                try:
                    done.append(critic_.calibrate_and_label(
                        config, db, pool, stage, holdout.trainable, max_pairs=max_pairs,
                        on_progress=on_progress,
                    ))  # fmt: skip
                except UsageError as exc:
                    skipped.append({"stage": stage, "why": exc.message})
    finally:
        pool.close()
    if as_json:
        emit_json({
            "min_critic_agreement": threshold,
            "calibrations": [c.to_dict() | {"usable": c.usable(threshold)} for c in done],
            "skipped": skipped,
        })  # fmt: skip
    else:
        for c in done:
            use = (
                "[green]labels used[/]"
                if c.usable(threshold)
                else f"[yellow]labels not used[/]: lower bound {c.low:.2f} ≤ {threshold:.2f}"
            )
            rate = f"{c.rate:.0%}" if c.rate is not None else "–"
            console.print(
                f"{c.stage:14} agrees with the harness on {c.agreed}/{c.pairs} pairs ({rate}, "
                f"95% Wilson {c.low:.2f}–{c.high:.2f}); labelled {c.labelled} of {c.undecided} "
                f"undecided pairs; {use}"
            )
        for s in skipped:
            console.print(f"{s['stage']:14} [dim]skipped: {escape(s['why'])}[/]")
    if not done:
        raise SystemExit(3)
