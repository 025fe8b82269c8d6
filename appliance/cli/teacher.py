"""`forge teacher run`: a stronger model's answers to Forge's own stage prompts, graded by
the harness, written as a data package (the connected side; docs/data-package.md)."""

from __future__ import annotations

import functools
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.teacher.run import TeacherOptions, TeacherReport, teacher_run


@click.group()
def teacher() -> None:
    """A teacher on the connected side: its graded answers become a data package."""


_OPTIONS = [
    click.option(
        "-o",
        "--out",
        "out",
        type=click.Path(path_type=Path),
        required=True,
        help="The run's folder: its state (resumed from) and the data package.",
    ),
    click.option(
        "--endpoint",
        required=True,
        help="Base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1.",
    ),
    click.option("--model", required=True, help="The teacher: a model the endpoint serves."),
    click.option(
        "--license",
        "license_",
        required=True,
        help="Under which the rows may be used (the teacher's terms), for the manifest.",
    ),
    click.option(
        "--commits",
        type=click.IntRange(min=1),
        help="Use at most the first N usable train commits (default: all).",
    ),
    click.option(
        "--samples",
        type=click.IntRange(min=1, max=32),
        help="Samples per commit (default: campaign.samples).",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(min=1, max=64),
        default=1,
        show_default=True,
        help="Samples run at once (each its own requests to the endpoint).",
    ),
    click.option(
        "--rate",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        help="At most R requests a minute to the endpoint; 0: no limit.",
    ),
    click.option(
        "--api-key-env",
        default="OPENAI_API_KEY",
        show_default=True,
        help="Environment variable holding the API key ('none': a keyless server). "
        "The key is never written anywhere.",
    ),
    click.option(
        "--max-tokens",
        type=click.IntRange(min=16, max=65536),
        default=2048,
        show_default=True,
        help="The teacher's answer per stage, at most.",
    ),
    click.option("--name", help="The data package's name (default: PACKAGE-teacher)."),
    click.option("--version", "version", help="Its version (default: the time it is written)."),
    click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON."),
]


def _options(command):
    """The options of `run`, listed once (the command reads them top to bottom)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


@teacher.command()
@click.argument("package", metavar="PACKAGE")
@_options
def run(package: str, out: Path, endpoint: str, model: str, license_: str, commits, samples,
        concurrency: int, rate: float, api_key_env: str, max_tokens: int, name, version,
        as_json: bool) -> None:  # fmt: skip
    """Run the five stages with the teacher MODEL at ENDPOINT on PACKAGE's train commits
    (never an eval package's, never one held out for evaluation), with exactly the
    prompts and context packages Forge's campaign gives the student (sized by this box's
    models.toml), grade each sample's edits with the harness in the sandbox, and write a
    data package to OUT/NAME-VERSION: SFT rows of every stage answer of each resolved
    sample, DPO rows of a resolved sample's answer over a failed one's to the same prompt.

    PACKAGE is a repo package folder (ingested into this FORGE_HOME first, left in place)
    or the name of an ingested package (NAME or NAME@VERSION).

    Resumable: OUT keeps every finished sample; run the same command again and only what
    is missing is asked (a larger --commits adds commits). Exit 0 when the run finished
    (a package is written when some sample resolved); 1 when the endpoint failed.
    """
    config, db = open_forge(sandbox=True)
    options = TeacherOptions(
        endpoint=endpoint, model=model, license=license_, api_key_env=api_key_env,
        commits=commits, samples=samples, concurrency=concurrency, rate=rate,
        max_tokens=max_tokens, name=name, version=version,
    )  # fmt: skip
    with _Shown(disable=as_json) as shown:
        report = teacher_run(config, db, package, out, options, on_event=shown.event)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print(report)


class _Shown:
    """The run's progress on stderr: the commit being graded or asked, samples done."""

    def __init__(self, disable: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[outcomes]}"),
            console=err_console,
            disable=disable,
        )
        self.outcomes: dict[str, int] = {}
        self.task = None  # made at the first event: an error before it shows no bar

    def __enter__(self) -> _Shown:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.__exit__(*exc_info)

    def event(self, kind: str, info: dict) -> None:
        if self.task is None:
            self.task = self.progress.add_task("grading commits (harness)", total=None,
                                               outcomes="")  # fmt: skip
        update = functools.partial(self.progress.update, self.task)
        if kind == "gold":
            update(description=f"grading commit {info['sha'][:12]} (harness)")
        elif kind == "planned":
            update(total=info["samples"], description=f"{info['commits']} commits, "
                   f"{info['samples']} samples to ask ({info['skipped']} done before)")  # fmt: skip
        elif kind == "commit":
            update(description=f"{info['sha'][:12]} {escape(info['message'])}")
        elif kind == "sample":
            self.outcomes[info["outcome"]] = self.outcomes.get(info["outcome"], 0) + 1
            update(
                advance=1, outcomes=" ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items()))
            )


def _print(report: TeacherReport) -> None:
    said = ", ".join(f"{k} {n}" for k, n in report.outcomes.items()) or "none"
    console.print(
        f"{escape(report.package)}: {len(report.commits)} commits, {report.ran} samples asked "
        f"({report.skipped} done before), {report.calls} calls; all samples: {escape(said)}"
    )
    for stage, kinds in report.rows.items():
        console.print(f"    {stage}: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    if report.data_package:
        console.print(f"[green]data package[/] {escape(report.data_package)}")
        console.print("    → copy it into the air-gapped box's ingest folder, then forge ingest")
    else:
        console.print(f"[yellow]{escape(report.note)}[/]")
