"""What an operator asks Forge to do, done by forged when it runs (so it happens in the
daemon, in order with its jobs, and the serving pool of its next job sees it at once) and
in the foreground when no daemon answers. `forge` and the dashboard both call these."""

from __future__ import annotations

import time
from collections.abc import Callable

from appliance import registry
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.ops import control, jobs

FINISHED = ("done", "failed", "cancelled")


class DaemonRefused(ForgeError):
    """forged answered, and said no (with its reason and hint)."""

    def __init__(self, message: str, hint: str | None, exit_code: int) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


def ask(config: Config, command: str, **args) -> dict | None:
    """forged's answer to `command`; None when no daemon runs; DaemonRefused when it says no."""
    answer = control.request(config, command, **args)
    if answer is None:
        return None
    if not answer.get("ok"):
        raise DaemonRefused(
            answer.get("error") or f"forged refused {command}", answer.get("hint"),
            int(answer.get("exit_code") or 1),
        )  # fmt: skip
    return answer


class NoDaemon(ForgeError):
    """The request needs forged (pause, resume, cancel a running job, …) and no daemon
    answers."""


def ask_daemon(config: Config, command: str, why: str, **args) -> dict:
    """forged's answer to `command`; NoDaemon, saying `why` it needs one, when none runs."""
    answer = ask(config, command, **args)
    if answer is None:
        raise NoDaemon(f"forged is not running: {why}",
                       "start it: systemctl start forged (or run forged)")  # fmt: skip
    return answer


def _version(adapter) -> dict:
    return {"name": adapter.name if adapter else "base",
            "version": adapter.version if adapter else None}  # fmt: skip


def rollback_now(db, stage: str, to: int | None = None, to_base: bool = False) -> dict:
    before, after = registry.rollback(db, stage, to, to_base=to_base)
    old, new = _version(before), _version(after)
    return {"stage": stage, "from": old["name"], "to": new["name"],
            "from_version": old["version"], "to_version": new["version"]}  # fmt: skip


def force_promote_now(db, stage: str, version: int) -> dict:
    before = registry.active(db, stage)
    registry.promote(db, stage, version, forced=True, note="--force: the gate was skipped")
    return {"stage": stage, "version": f"{stage}-v{version}", "promoted": True, "forced": True,
            "previous": _version(before)["name"], "active": f"{stage}-v{version}"}  # fmt: skip


def rollback(config: Config, db, stage: str, to: int | None = None, to_base: bool = False):
    answer = ask(config, "rollback", stage=stage, to=to, to_base=to_base)
    if answer is not None:
        return answer["result"] | {"via": "daemon"}
    return rollback_now(db, stage, to, to_base) | {"via": "foreground"}


def force_promote(config: Config, db, stage: str, version: int) -> dict:
    answer = ask(config, "promote", stage=stage, version=version, force=True)
    if answer is not None:
        return answer["result"] | {"via": "daemon"}
    return force_promote_now(db, stage, version) | {"via": "foreground"}


def queue_job(config: Config, kind: str, args: dict | None = None) -> dict | None:
    """Ask forged to run a job now: {"job": ..., "queued": bool} (False: one of that kind
    was live already, and that one is returned); None when no daemon runs."""
    return ask(config, "run", kind=kind, args=args or {})


def wait(
    db,
    job_id: int,
    on_update: Callable[[jobs.Job], None] | None = None,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> jobs.Job:
    """Follow a job in the database until it finishes (or `timeout_s` passes)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        job = jobs.get(db, job_id)
        if on_update:
            on_update(job)
        if job.status in FINISHED:
            return job
        if deadline is not None and time.monotonic() > deadline:
            return job
        time.sleep(poll_s)


def report_lines(evaluation: dict) -> list[str]:
    """An evaluation (Evaluation.to_dict(), or a stored decision's report) as the lines
    `forge eval` prints: the gate's metrics and verdict, the trivial baselines scored on
    the same tasks, and the leak check."""
    from appliance.evaluation.gate import GateDecision  # statsmodels: not on forge --help

    head = (f"{evaluation['candidate']} vs {evaluation['baseline']} on "
            f"{evaluation['examples']} examples — {evaluation['note']}")  # fmt: skip
    lines = [head, *(f"  {line}" for line in GateDecision.from_dict(evaluation).render())]
    if evaluation.get("baselines"):
        lines.append("  trivial baselines (no model), on the same tasks:")
        lines += [
            f"    {b['name']}: "
            + ", ".join(f"{metric} {value:.3g}" for metric, value in b["scores"].items())
            for b in evaluation["baselines"]
        ]
    leak = evaluation.get("leak_check")
    if leak:
        trained_on = leak["dataset"] or "no dataset (the base)"
        lines.append(f"  leak check: {leak['leaks']} of {leak['tasks']} tasks in the rows of "
                     f"{trained_on}")  # fmt: skip
    return lines


def gate_promote_now(
    config: Config, db, stage: str, version: int, on_progress=None, on_workers=None
) -> dict:
    """Evaluate `version` against the version in service and promote it if the gate says
    so; a candidate it turns down is marked rejected (one evaluated on too few tasks stays
    a candidate). The work of `forge promote` (in the
    foreground, or as the daemon's promote job)."""
    from appliance.evaluation.compare import evaluate  # scipy, statsmodels: as above

    registry.get(db, stage, version)  # a clear error for an unknown version, before any work
    before = registry.active(db, stage)
    evaluation = evaluate(
        config, db, stage, version, on_progress=on_progress, on_workers=on_workers
    )
    verdict = evaluation.decision.verdict
    if verdict == "promote":
        registry.promote(db, stage, version, decision_id=evaluation.decision_id)
    elif verdict == "reject" and registry.get(db, stage, version).status == "candidate":
        # "insufficient" leaves a candidate as it is: too few tasks said nothing against it
        registry.reject(db, stage, version, decision_id=evaluation.decision_id)
    after = registry.active(db, stage)
    return {"stage": stage, "version": f"{stage}-v{version}",
            "promoted": after is not None and after.version == version, "forced": False,
            "previous": _version(before)["name"], "active": _version(after)["name"],
            "evaluation": evaluation.to_dict()}  # fmt: skip
