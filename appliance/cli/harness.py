"""`forge harness check|run`: gold grading of a package's commits, and grading a patch."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.status import Status

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.errors import UsageError
from appliance.harness.checkout import sweep
from appliance.harness.edits import EditNotApplied, load_edits
from appliance.harness.grading import PatchVerdict, grade_patch
from appliance.harness.results import gold_for, grade_commits, save_patch
from appliance.harness.spec import commit_specs

EXIT_NOT_RESOLVED = 3
EXIT_INFRA = 4
MAX_PATCH_BYTES = 16 << 20


@click.group()
def harness() -> None:
    """Run a package's own tests in the sandbox and grade commits and patches."""


@harness.command()
@click.argument("package_name", metavar="PACKAGE")
@click.option(
    "--commit",
    "commits",
    multiple=True,
    help="Only this commit (sha or 7+ digit prefix; repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Grade at most N commits.")
@click.option("--force", is_flag=True, help="Grade again even when a stored result is current.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Commits graded at the same time.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def check(package_name: str, commits, limit, force: bool, jobs: int, as_json: bool) -> None:
    """Gold-grade the commits of an ingested PACKAGE (e.g. demo).

    For each commit: the parent with the commit's test files, then the commit itself
    (several runs, to find flaky tests). Prints FAIL_TO_PASS / PASS_TO_PASS / flaky
    counts and whether the commit is a usable task. Results are stored and reused.
    Exit 0 when every commit was graded, 4 when some hit an infrastructure failure.
    """
    config, db = open_forge(sandbox=True)
    sweep(config)
    specs = commit_specs(config, db, package_name, list(commits) or None)
    if limit:
        specs = specs[:limit]
    order = {spec.sha: index for index, spec in enumerate(specs, 1)}
    results = []
    quiet = as_json or not console.is_terminal
    with Status("grading…", console=err_console) if not quiet else _Null() as status:

        def on_run(spec, side, run):
            if status is not None:
                status.update(
                    f"{len(results)}/{len(specs)} done · {spec.sha[:12]} {side}: {run.status}"
                )

        for spec, result, reused in grade_commits(
            config, db, specs, force=force, jobs=jobs, on_run=on_run
        ):
            row = result.to_dict() | {"reused": reused, "subject": spec.message.splitlines()[0]}
            results.append(row)
            if not as_json:
                _print_gold(
                    f"[{order[spec.sha]}/{len(specs)}] {spec.sha[:12]}", spec, result, reused
                )
    results.sort(key=lambda row: order[row["sha"]])
    infra = sum(1 for r in results if r["status"] == "infra")
    if as_json:
        emit_json(results)
    else:
        usable = sum(1 for r in results if r["usable"])
        console.print(
            f"{len(results)} commit(s) graded: {usable} usable, "
            f"{len(results) - usable - infra} not usable, {infra} infrastructure failure(s)"
        )
    if infra:
        raise SystemExit(EXIT_INFRA)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


def _print_gold(label: str, spec, result, reused: bool) -> None:
    mark = (
        "[green]usable[/]" if result.usable else
        "[red]infra[/]" if result.status == "infra" else "[yellow]not usable[/]"
    )  # fmt: skip
    note = " (stored)" if reused else f" ({result.duration_s:.1f} s)"
    console.print(
        f"{label}  F2P {len(result.fail_to_pass):3d}  P2P {len(result.pass_to_pass):3d}  "
        f"flaky {len(result.flaky):2d}  {mark}{note}  {escape(spec.message.splitlines()[0][:60])}"
    )
    if not result.usable:
        console.print(f"    {escape(result.reason)}")


@harness.command()
@click.argument("package_name", metavar="PACKAGE")
@click.option("--commit", "sha", required=True, help="The task commit (sha or 7+ digit prefix).")
@click.option(
    "--patch",
    "patch_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A unified diff, or a JSON list of search/replace edits {path, search, replace}.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def run(package_name: str, sha: str, patch_file: Path, as_json: bool) -> None:
    """Apply a patch to the commit's parent, run the tests, and grade it.

    The commit's own test files are laid over the patched tree; changes the patch makes
    to test files are ignored. A run whose results were rewritten by the code under test
    (the witness stream, the JUnit report and pytest's exit status disagree) is
    "tampered". Edits to test infrastructure (conftest, pytest configuration, startup
    hooks, code reaching into pytest) are flagged. Exit 0: resolved; 3: not resolved
    (tests fail, tampered, or the patch does not apply); 4: infrastructure failure.
    """
    if not patch_file.is_file():
        raise UsageError(f"{patch_file} does not exist or is not a file", "give the patch's path")
    if patch_file.stat().st_size > MAX_PATCH_BYTES:
        raise UsageError(
            f"{patch_file} is {patch_file.stat().st_size} bytes; a patch may be at most "
            f"{MAX_PATCH_BYTES >> 20} MiB",
            "give the diff of the change alone",
        )
    try:
        raw = patch_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {patch_file}: {exc.strerror}") from exc
    config, db = open_forge(sandbox=True)
    (spec,) = commit_specs(config, db, package_name, [sha])
    with Status("grading the commit…", console=err_console) if not as_json else _Null():
        gold, _ = gold_for(config, db, spec)
    if gold.status == "ok" and not gold.usable:
        raise UsageError(
            f"{spec.sha[:12]} is not a usable task: {gold.reason}",
            "pick a commit that forge harness check marks usable",
        )
    with Status("grading the patch…", console=err_console) if not as_json else _Null():
        try:
            kind, payload = load_edits(patch_file)
        except EditNotApplied as exc:
            verdict = PatchVerdict("not_applied", exc.message)
        else:
            verdict = grade_patch(config, spec, gold, kind, payload)
    grading_id = save_patch(db, spec, raw, verdict)
    data = verdict.to_dict() | {"sha": spec.sha, "package": spec.package, "id": grading_id}
    if as_json:
        emit_json(data)
    else:
        _print_verdict(spec, gold, verdict)
    if verdict.verdict == "infra":
        raise SystemExit(EXIT_INFRA)
    if not verdict.resolved:
        raise SystemExit(EXIT_NOT_RESOLVED)


def _print_verdict(spec, gold, verdict) -> None:
    colour = {"resolved": "green", "failed": "red", "not_applied": "yellow", "infra": "magenta",
              "tampered": "bold red"}  # fmt: skip
    console.print(
        f"{spec.package} {spec.sha[:12]}: [{colour[verdict.verdict]}]{verdict.verdict}[/] — "
        f"{escape(verdict.reason)}"
    )
    if verdict.changed:
        console.print(f"  changed: {escape(', '.join(verdict.changed))}")
    for flag in verdict.flags:
        console.print(f"  [yellow]flagged[/] test infrastructure edited — {escape(flag)}")
    for test, outcome in sorted(verdict.fail_to_pass.items()):
        console.print(f"  FAIL_TO_PASS {escape(test)}: {outcome}")
    for test, outcome in sorted(verdict.pass_to_pass_broken.items()):
        console.print(f"  PASS_TO_PASS broken {escape(test)}: {outcome}")
    if verdict.run and verdict.verdict != "resolved":
        console.print(f"  run: {verdict.run['status']}, {escape(verdict.run['detail'])}")
