"""`forge package build|validate` and `forge ingest`: repo packages in and out."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import click
from rich.markup import escape
from rich.status import Status

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.config import load_config
from appliance.datapackages.take import take_data_package
from appliance.datasets.versions import rows_made_from
from appliance.errors import ForgeError, UsageError
from appliance.ops import actions
from appliance.packages.build import BuildOptions, build_package
from appliance.packages.ingest import ingest as run_ingest
from appliance.packages.split import set_split
from appliance.packages.validate import validate as run_validation


@click.group()
def package() -> None:
    """Make (connected side) and check repo packages."""


def _stacked(*decorators: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """One decorator that applies `decorators` as if stacked in this order above a function."""

    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


# `forge package build`'s options, in the order --help lists them.
_build_options = _stacked(
    click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path),
        required=True,
        help="Folder to create for the package (must not exist or be empty).",
    ),
    click.option("--name", help="Package name (default: from SOURCE)."),
    click.option("--version", "version_", help="Package version (default: date.headsha)."),
    click.option("--description", default="", help="One line about the repository."),
    click.option("--license", "license_", default="", help="The repository's license."),
    click.option(
        "--python",
        default=">=3.11",
        show_default=True,
        help="Python versions the package supports.",
    ),
    click.option(
        "--requirement",
        "-r",
        "requirements",
        multiple=True,
        help="A requirement to add to the declared ones (repeatable); it replaces what the "
        "commits declare of the same project. pytest is always added. Pinned.",
    ),
    click.option(
        "--extra",
        "extras",
        multiple=True,
        help="The [project.optional-dependencies] extra that holds the test requirements "
        "(repeatable; default: test/tests/testing, else dev).",
    ),
    click.option(
        "--group",
        "groups",
        multiple=True,
        help="The [dependency-groups] group that holds the test requirements (repeatable; "
        "default: test/tests/testing, else dev). --extra or --group: exactly those.",
    ),
    click.option(
        "--python-version", help="Python to resolve for, MAJOR.MINOR (default: this box's)."
    ),
    click.option(
        "--platform",
        "platform_",
        help="Platform to resolve for, as uv names it, e.g. x86_64-manylinux_2_28 "
        "(default: this box's).",
    ),
    click.option(
        "--any-commit",
        is_flag=True,
        help="Keep commits that do not change both code and tests (default: they are removed).",
    ),
    click.option(
        "--test-command",
        default="pytest -q",
        show_default=True,
        help="Command that runs the tests (pytest).",
    ),
    click.option(
        "--test-timeout",
        default=600.0,
        show_default=True,
        type=click.FloatRange(min=1),
        help="Seconds the whole test run may take.",
    ),
    click.option(
        "--split", type=click.Choice(["train", "eval"]), help="Hint for the train/eval split."
    ),
    click.option(
        "--max-commits", type=click.IntRange(min=1), help="Keep at most the N newest tasks."
    ),
    click.option(
        "--max-requirement-sets",
        default=8,
        show_default=True,
        type=click.IntRange(min=1),
        help="Pinned requirement sets at most: commits that declare other dependencies get a "
        "set of their own up to this many; one that would need another is dropped.",
    ),
    click.option(
        "--latest",
        is_flag=True,
        help="Resolve against the index as it is today (default: each requirement set as the "
        "index was at its commit's date, what the developers installed then).",
    ),
    click.option("--since", type=click.DateTime(), help="Only commits after this date."),
    click.option(
        "--find-links",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Take wheels from this folder instead of the package index.",
    ),
    click.option(
        "--index-url", help="A PEP 503 simple index to take wheels from instead of PyPI (a mirror)."
    ),
    click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON."),
)


@package.command()
@click.argument("source")
@_build_options
def build(
    source: str,
    output: Path,
    name,
    version_,
    description,
    license_,
    python,
    requirements,
    extras,
    groups,
    python_version,
    platform_,
    any_commit,
    test_command,
    test_timeout,
    split,
    max_commits,
    max_requirement_sets,
    latest,
    since: datetime | None,
    find_links,
    index_url,
    as_json,
) -> None:
    """Build a repo package from SOURCE (a work tree, a bare repository or a git URL).

    Keeps the commits that make good tasks (non-merge, 1–5 files, < 200 lines, changes
    code and tests, imperative message of ≥ 3 words, no bots, not docs/CI-only), reads the
    dependencies each declares (pyproject.toml, requirements files, tox.ini; nothing
    runs), pins them for the target Python (commits that declare the same dependencies
    share one pinned set; at most --max-requirement-sets sets), and reports how many
    commits each filter removed.
    """
    config = load_config()
    argv = _test_argv(test_command, find_links, index_url)
    opts = BuildOptions(
        source=source,
        output=output,
        name=name,
        version=version_,
        description=description,
        license=license_,
        python=python,
        requirements=requirements,
        extras=extras,
        groups=groups,
        python_version=python_version,
        platform=platform_,
        any_commit=any_commit,
        index_url=index_url,
        test_command=argv,
        test_timeout_s=test_timeout,
        split=split,
        max_commits=max_commits,
        max_requirement_sets=max_requirement_sets,
        latest=latest,
        since=since,
        find_links=find_links,
    )
    config.dir("envs").mkdir(parents=True, exist_ok=True)
    with Status("building", console=err_console) as spinner:
        result = build_package(
            opts, config.dir("envs") / ".uv-cache", lambda msg: spinner.update(msg)
        )
    _report_build(result, as_json)


def _test_argv(test_command: str, find_links: Path | None, index_url: str | None) -> list[str]:
    """--test-command as argv; refuses an empty one, and --find-links with --index-url."""
    argv = shlex.split(test_command)
    if not argv:
        raise UsageError("--test-command is empty", "give the pytest command, e.g. 'pytest -q'")
    if find_links is not None and index_url:
        raise UsageError(
            "--find-links and --index-url both say where wheels come from", "give one of them"
        )
    return argv


def _report_build(result, as_json: bool) -> None:
    """What `forge package build` made: JSON, or lines for the operator."""
    kept = len(result.manifest.commits)
    if as_json:
        emit_json(
            {
                "path": str(result.path),
                "name": result.manifest.name,
                "version": result.manifest.version,
                "scanned": result.scanned,
                "kept": kept,
                "removed": result.removed,
                "declared": list(result.declared),
                "requirement_sets": [
                    {"requirements": pins, "commits": len(result.manifest.commits_using(i))}
                    for i, pins in enumerate(result.manifest.requirement_sets)
                ],
                "wheels": len(result.manifest.wheels),
            }
        )
        return
    console.print(f"built {result.manifest.name} {result.manifest.version} in {result.path}")
    console.print(f"  {result.scanned} commits read, {kept} kept as tasks")
    for reason, count in result.removed.items():
        if count:
            console.print(f"  removed by {reason:<28} {count}")
    for where in result.declared:
        console.print(f"  declared in {escape(where)}")
    sets = result.manifest.requirement_sets
    console.print(f"  {len(sets)} pinned requirement sets, {len(result.manifest.wheels)} wheels")
    for index, pins in enumerate(sets):
        users = len(result.manifest.commits_using(index))
        console.print(
            f"  set {index}: {len(pins)} pins, used by {users} commit{'' if users == 1 else 's'}"
        )


@package.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def validate(directory: Path, as_json: bool) -> None:
    """Check a repo package: manifest, wheels, test-command dry run, file rules.

    Prints one line per broken rule (what, where, what to do). Exits 0 only when every
    check passes.
    """
    config = load_config()
    with Status(f"validating {directory}", console=err_console):
        report = run_validation(directory, config)
    if as_json:
        emit_json(report.to_dict())
    else:
        label = escape(
            f"{report.manifest.name} {report.manifest.version}"
            if report.manifest
            else str(directory)
        )
        for check, outcome in report.checks.items():
            colour = {"pass": "green", "fail": "red"}.get(outcome, "yellow")
            console.print(f"[{colour}]{outcome:<7}[/] {check}")
        for problem in report.problems:
            console.print(f"[red]✗[/] {escape(problem.line())}")
        console.print(
            f"{label}: "
            + (
                "[green]valid[/]"
                if report.ok
                else f"[red]rejected[/] ({len(report.problems)} problem(s))"
            )
        )
    if not report.ok:
        raise SystemExit(1)


@package.command(name="split")
@click.argument("name")
@click.argument("split", type=click.Choice(["train", "eval"]))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def split_(name: str, split: str, as_json: bool) -> None:
    """Put the ingested package NAME (or NAME-VERSION; every version of it moves) in the
    train or the eval split. Campaigns and datasets use train packages, evaluation the eval
    ones; a package datasets already hold rows from cannot become eval."""
    _, db = open_forge()
    change = set_split(db, name, split, functools.partial(rows_made_from, db))
    if as_json:
        emit_json(change.to_dict())
        return
    for version, before in change.before:
        console.print(f"{escape(change.name)} {escape(version)}: {before or 'unset'} → {split}")


@click.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the packages where they are (read-only media, the shipped demo).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def ingest(directory: Path | None, keep: bool, as_json: bool) -> None:
    """Take complete packages from DIRECTORY (default FORGE_HOME/ingest/) into the corpus.

    DIRECTORY may also be one package. Packages still being copied (no READY marker and
    changed recently) are left for the next run. Accepted packages are removed from the
    ingest folder; rejected ones move to quarantine/ with REJECTED.txt (with --keep both
    stay put). Exits 1 when any package was rejected.
    """
    config, db = open_forge()
    colours = {
        "accepted": "green",
        "duplicate": "cyan",
        "recovered": "green",
        "waiting": "yellow",
        "rejected": "red",
    }

    def show(result: dict) -> None:
        if as_json:
            return
        label = escape(f"{result['name']} {result['version']}" if result["name"]
                       else result["source"])  # fmt: skip
        console.print(
            f"[{colours[result['outcome']]}]{result['outcome']:<9}[/] {label}"
            + (f" → {escape(result['path'])}" if result["path"] else "")
        )
        for reason in result["reasons"]:
            console.print(f"          {escape(reason)}")

    results = _ingest_by_daemon(config, db) if directory is None and not keep else None
    if results is not None:
        for result in results:
            show(result)
    else:
        with Status("looking for packages", console=err_console) as spinner:
            results = [r.to_dict() for r in run_ingest(
                config, db, directory, on_result=lambda r: show(r.to_dict()),
                hook=lambda stage: spinner.update(f"ingest: {stage}"), keep=keep,
                trained_rows=functools.partial(rows_made_from, db),
                take_data=functools.partial(take_data_package, config, db),
            )]  # fmt: skip
    if as_json:
        emit_json({"results": results})
    elif not results:
        console.print(f"nothing to ingest in {directory or config.dir('ingest')}")
    if any(r["outcome"] == "rejected" for r in results):
        raise SystemExit(1)


def _ingest_by_daemon(config, db) -> list[dict] | None:
    """FORGE_HOME/ingest/ taken by forged's ingest job now (so it never races the
    daemon's own); None when no daemon runs."""
    answer = actions.ask(config, "ingest")
    if answer is None:
        return None
    with Status(f"forged is ingesting (job {answer['job']['id']})", console=err_console):
        job = actions.wait(db, answer["job"]["id"])
    if job.status != "done":
        raise ForgeError(f"forged's ingest job {job.id} {job.status}: {job.error}",
                         f"forge job log {job.id} shows why")  # fmt: skip
    return (job.result or {}).get("results", [])
