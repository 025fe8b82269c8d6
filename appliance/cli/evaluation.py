"""`forge eval`, `forge promote`, `forge decisions` and `forge cycle`: the gate and the loop.

Exit codes: 0 the gate promoted (eval: would promote), 3 the gate said no, 1 the work
failed, 2 bad usage.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from appliance import registry
from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.config import FORGE_ROOT
from appliance.cycle.loop import run_cycle
from appliance.cycle.profile import with_profile
from appliance.errors import ForgeError, UsageError
from appliance.evaluation.store import decisions as stored
from appliance.ops import actions
from appliance.sandbox import check_sandbox

REJECTED = 3


class VersionType(click.ParamType):
    """`vN`, `N` or `STAGE-vN`."""

    name = "vN"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"(?:[a-z_]+-)?v?(\d+)", str(value).strip())
        if not match or int(match[1]) < 1:
            self.fail(f"{value!r} is not a version: write it as v1, v2, … (or scope-v2)")
        return int(match[1])


VERSION = VersionType()


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=disable,
    )


def _evaluate(config, db, stage: str, version, quiet: bool, answers: Path | None = None):
    # scipy, statsmodels: ~1 s on --help
    from appliance.evaluation.compare import evaluate, evaluate_answers

    with _progress(quiet) as progress:
        task = progress.add_task(f"{stage}: preparing the evaluation set", total=None)

        def on_progress(stage, arm, i, n):
            progress.update(task, description=f"{stage}: {arm}", completed=i, total=n)

        if answers is not None:
            return evaluate_answers(config, db, stage, answers, on_progress=on_progress)
        return evaluate(config, db, stage, version, on_progress=on_progress)


def _export(config, db, stage: str, out: Path, quiet: bool) -> int:
    from appliance.evaluation.compare import export_examples  # as above

    with _progress(quiet) as progress:
        progress.add_task(f"{stage}: building the evaluation examples", total=None)
        return export_examples(config, db, stage, out)


def _through_daemon(config, db, kind: str, args: dict, quiet: bool) -> dict | None:
    """Run `kind` as forged's job when the daemon runs, following its progress: the job's
    result; None when no daemon runs (the caller works in the foreground)."""
    answer = actions.queue_job(config, kind, args)
    if answer is None:
        return None
    job_id = answer["job"]["id"]
    if not quiet:
        err_console.print(f"forged runs this as job {job_id} (its log: forge job log {job_id})")
    with _progress(quiet) as progress:
        task = progress.add_task(f"job {job_id}: queued", total=None)

        def on_update(job):
            p = job.progress
            text = " ".join(str(x) for x in (p.get("step"), p.get("text")) if x)
            progress.update(task, description=f"job {job_id}: {text or job.status}",
                            completed=p.get("done", 0), total=p.get("total") or None)  # fmt: skip

        job = actions.wait(db, job_id, on_update)
    if job.status != "done":
        raise ForgeError(f"job {job_id} ({kind}) {job.status}: {job.error or 'no error recorded'}",
                         f"forge job log {job_id} shows its log")  # fmt: skip
    return (job.result or {}) | {"via": "daemon", "job": job_id}


def _print_report(evaluation) -> None:
    for line in actions.report_lines(evaluation.to_dict()):
        console.print(escape(line))


@click.command(name="eval")
@click.argument("stage")
@click.option("--candidate", type=VERSION, help="The version to evaluate (default: the newest "
              "candidate).")  # fmt: skip
@click.option("--export-examples", "export_to", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the stage's evaluation examples (no answers) to this JSONL file "
              "and stop.")  # fmt: skip
@click.option("--answers", type=click.Path(dir_okay=False, path_type=Path),
              help="Score this JSONL file of {id, answer} against the version in service, "
              "instead of an adapter.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def eval_(stage: str, candidate, export_to, answers, as_json: bool) -> None:
    """Evaluate a candidate adapter of STAGE against the version in service (or the base)
    on held-out examples, task by task, beside trivial baselines (answers that need no
    model), with deterministic decoding, and print the gate's verdict.

    `--export-examples FILE` writes the examples for answers from elsewhere (a teacher, a
    colleague, a script): per line the id, the stage's input, the messages, the prompt and
    the answer's JSON schema. `--answers FILE` scores such answers with the same metrics,
    baselines and gate.

    Changes nothing in the registry. Runs already made are reused. Exit 0 when the gate
    would promote, 3 when it would not (reject, or too few tasks: insufficient).
    """
    if export_to is not None and (answers is not None or candidate is not None):
        raise UsageError("--export-examples writes the examples only",
                         "export first, then score the answers with --answers")  # fmt: skip
    if answers is not None and candidate is not None:
        raise UsageError("--answers takes the place of the candidate adapter",
                         "give --candidate or --answers, not both")  # fmt: skip
    config, db = open_forge()
    if export_to is not None:
        written = _export(config, db, stage, export_to, as_json)
        if as_json:
            emit_json({"stage": stage, "examples": written, "path": str(export_to)})
        else:
            console.print(f"{written} {stage} examples written to {escape(str(export_to))}")
        return
    evaluation = _evaluate(config, db, stage, candidate, as_json, answers)
    if as_json:
        emit_json(evaluation.to_dict())
    else:
        _print_report(evaluation)
    if evaluation.decision.verdict != "promote":
        raise SystemExit(REJECTED)


@click.command()
@click.argument("stage")
@click.argument("version", type=VERSION)
@click.option("--force", is_flag=True, help="Promote without the gate (recorded as forced).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def promote(stage: str, version: int, force: bool, as_json: bool) -> None:
    """Put STAGE's adapter VERSION in service, if the gate agrees.

    The gate compares it with the version in service on held-out examples; a version the
    gate turns down is marked rejected and nothing else changes (exit 3). `--force` skips
    the gate and records that it did. The serving pool uses the new version from the
    next request.
    """
    config, db = open_forge()
    registry.get(db, stage, version)  # a clear error for an unknown version, before any work
    if force:
        result = actions.force_promote(config, db, stage, version)
    else:
        result = _through_daemon(config, db, "promote", {"stage": stage, "version": version},
                                 as_json)  # fmt: skip
        if result is None:
            with _progress(as_json) as progress:
                task = progress.add_task(f"{stage}: preparing the evaluation set", total=None)

                def on_progress(stage, arm, i, n):
                    progress.update(task, description=f"{stage}: {arm}", completed=i, total=n)

                result = actions.gate_promote_now(config, db, stage, version, on_progress)
            result["via"] = "foreground"
    promoted = result["promoted"]
    if as_json:
        emit_json(result)
    else:
        if result.get("evaluation"):
            for line in actions.report_lines(result["evaluation"]):
                console.print(escape(line))
        if promoted:
            console.print(f"[green]{stage}-v{version} is active[/] (was {result['previous']})"
                          + (" — forced, without the gate" if force else ""))  # fmt: skip
        else:
            console.print(f"[yellow]{stage}-v{version} was not promoted[/]: the gate said no; "
                          f"{result['active'] if result['active'] != 'base' else 'the base'} "
                          "stays in service (--force overrides, and is recorded)")  # fmt: skip
    if not promoted:
        raise SystemExit(REJECTED)


@click.command()
@click.argument("stage", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def decisions(stage, limit: int, as_json: bool) -> None:
    """The gate's stored decisions (newest first), each with its report."""
    _, db = open_forge()
    found = stored(db, stage, limit)
    if as_json:
        emit_json([d.to_dict() for d in found])
        return
    if not found:
        console.print("no gate decisions yet: forge eval STAGE or forge cycle makes them")
    for d in found:
        console.print(f"#{d.id} {d.created_at}  {d.candidate} vs {d.baseline}: "
                      f"[bold]{d.verdict}[/]")  # fmt: skip
        for reason in d.report.get("reasons", []):
            console.print(f"    {escape(reason)}")


@click.command()
@click.option("--demo", is_flag=True, help="Run on the shipped demo package with quick settings.")
@click.option("--from", "source", type=click.Path(path_type=Path),
              help="Ingest from this folder (default: FORGE_HOME/ingest/).")  # fmt: skip
@click.option("--commits", type=click.IntRange(min=1),
              help="New commits per package this cycle (default: cycle.commits).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def cycle(demo: bool, source, commits, as_json: bool) -> None:
    """One whole loop: ingest → campaign on new train commits → datasets → train
    candidates → evaluate → promote or reject → a report. When forged runs it is the
    daemon's cycle job (followed here); otherwise it runs in the foreground.

    Interrupted, run it again: finished work is kept and skipped. `--demo` takes the
    shipped demo package (left in place) and the quick settings of
    appliance/cycle/demo.toml, under any keys set in forge.toml. Exit 0 when every step
    ran, 1 when one failed (the others still ran).
    """
    config, db = open_forge()
    keep = False
    if demo:
        if source is not None:
            raise UsageError("--demo and --from both name where packages come from",
                             "give one of them")  # fmt: skip
        config = with_profile(config)
        source, keep = FORGE_ROOT / "repo_packages" / "demo", True
        if not (source / "manifest.json").is_file():
            raise UsageError(f"the demo package is not built ({source} has no manifest.json)",
                             "run ./install.sh, which builds it")  # fmt: skip
    args = {"demo": demo, "source": str(source) if source and not demo else None,
            "commits": commits}  # fmt: skip
    daemon_report = _through_daemon(config, db, "cycle", args, as_json)
    if daemon_report is not None:
        if as_json:
            emit_json(daemon_report)
        else:
            _print_cycle_dict(daemon_report)
        if not daemon_report.get("ok"):
            raise SystemExit(1)
        return
    check_sandbox(config)
    with _progress(as_json) as bars:
        shown = _Bars(bars)
        report = run_cycle(config, db, source=source, keep=keep, commits=commits, progress=shown)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_cycle_dict(report.to_dict())
    if not report.ok:
        raise SystemExit(1)


class _Bars:
    """The loop's progress as one rich bar per step."""

    def __init__(self, bars: Progress) -> None:
        self.bars, self.tasks, self.devices = bars, {}, {}

    def step(self, name, text):
        self.tasks[name] = self.bars.add_task(text, total=None)

    def advance(self, name, done, total, text=""):
        if name in self.tasks:
            self.bars.update(self.tasks[name], completed=done, total=total or None,
                             description=f"{name}: {text}" if text else name)  # fmt: skip

    def workers(self, busy):
        """One line per device while a campaign or an evaluation is spread over them."""
        if not any(busy.values()):  # all idle: the spread is over
            for task in self.devices.values():
                self.bars.remove_task(task)
            self.devices.clear()
            return
        for device, doing in busy.items():
            name = f"GPU {device}" if device.isdigit() else device
            text = f"  {name}: {escape(doing) if doing else '[dim]idle[/]'}"
            if device not in self.devices:
                self.devices[device] = self.bars.add_task(text, total=None)
            self.bars.update(self.devices[device], description=text)

    def done(self, step):
        task = self.tasks.get(step.name)
        if task is not None:
            self.bars.update(task, description=f"{step.name}: {step.status} ({step.seconds:.0f} s)",
                             total=1, completed=1)  # fmt: skip


def _print_cycle_dict(report: dict) -> None:
    """A cycle's report (CycleReport.to_dict(), from here or from the daemon's job)."""
    for s in report["steps"]:
        colour = {"ok": "green", "skipped": "dim", "failed": "red"}[s["status"]]
        detail = ", ".join(
            f"{k} {v}" for k, v in s["detail"].items() if isinstance(v, (int, float, str))
        )
        console.print(
            f"[{colour}]{s['name']:9} {s['status']:8}[/] {s['seconds']:6.0f} s  {escape(detail)}"
        )
        for v in s["detail"].get("versions", []):
            gates = (
                "gates ok"
                if v["status"] == "ok"
                else "failed its gates: " + "; ".join(v["reasons"])
            )
            console.print(f"    {v['name']}: {v['rows']} rows ({v['new_rows']} new), "
                          f"{escape(gates)}")  # fmt: skip
        for t in s["detail"].get("trained", []):
            on = f" on {t['built_on']}" if t.get("built_on") else ""
            console.print(f"    {t['adapter']} ({t.get('kind', 'sft')}{on}) from {t['dataset']}: "
                          f"{t['steps']} steps, final loss {t['final_loss']:.3f}")  # fmt: skip
        for item in s["detail"].get("not_trained", []):
            kind = f" {item['kind']}" if item.get("kind") else ""
            console.print(f"    {item['stage']}:{kind} not trained ({escape(item['why'])})")
        for item in s["detail"].get("failed", []):
            console.print(f"    [red]{item['stage']}: {item['kind']} on {item['built_on']} "
                          f"failed[/] ({escape(item['error'])})")  # fmt: skip
    _print_candidates(report["decisions"])
    for d in report["decisions"]:
        console.print(f"[bold]{d['candidate']}[/] vs {d['baseline']}: {d['action']}")
        best = d.get("best_baselines", {})
        for m in d.get("metrics", []):
            line = (f"    {m['metric']} over {m['n']} tasks: {d['baseline']} "
                    f"{m['baseline']:.3g}, {d['candidate']} {m['candidate']:.3g}")  # fmt: skip
            if m["metric"] in best:
                line += f", best baseline ({best[m['metric']]['name']}) "
                line += f"{best[m['metric']]['value']:.3g}"
            console.print(escape(line))
        for reason in d["reasons"]:
            console.print(f"    {escape(reason)}")
    console.print(f"report: {escape(report['report'])}")


def _print_candidates(decisions: list[dict]) -> None:
    """Each stage's candidates side by side (an SFT one and DPO built on it, or one):
    kind, dataset, steps, loss, the gate's verdict against the version in service, and
    what was done."""
    stages: dict[str, list[dict]] = {}
    for d in decisions:
        stages.setdefault(d["stage"], []).append(d)
    for stage, found in stages.items():
        console.print(f"[bold]{stage}[/] candidates vs {escape(found[0]['baseline'])}:")
        console.print("    kind  candidate            dataset              steps  loss    "
                      "verdict       action")  # fmt: skip
        for d in found:
            loss = d.get("final_loss")
            console.print(escape(
                f"    {d.get('kind') or '?':5} {d['candidate']:20} {d.get('dataset') or '-':20} "
                f"{d.get('steps') if d.get('steps') is not None else '-':>5}  "
                f"{'-' if loss is None else f'{loss:.3f}':7} {d['verdict']:13} {d['action']}"
            ))  # fmt: skip
        versus = next((d["versus"] for d in found if d.get("versus")), None)
        if versus:
            console.print(escape(f"    {versus['candidate']} vs {versus['baseline']}: "
                                 f"{versus['verdict']}, so {versus['winner']}"))  # fmt: skip
