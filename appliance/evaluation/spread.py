"""An evaluation's runs spread over devices (issue 20): with `evaluation.devices` naming
two or more (GPU ids, CPU stand-ins "cpu0"…, or ["all"]: every GPU heavy jobs may use),
each (stage, arm) run an evaluation needs is a unit of a DeviceExecutor: one worker
process per device, each with its own model pool on its own device, the runs handed out
from one queue. A worker records its run as `Evaluator.run` always does (the examples,
their answers and outcomes, the summary); the comparison then finds every run finished
and reuses it. A run's answers do not depend on where it ran: its batches are the same
fixed places in the example list on every device.

With fewer than two devices nothing is spread: the runs are made where they are compared,
one after another, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance import registry, resources
from appliance.campaign.executor import DeviceExecutor, worker_device
from appliance.config import Config
from appliance.evaluation.heldout import EvaluationSet
from appliance.evaluation.run import Arm, Evaluator
from appliance.serving.pool import ModelPool
from appliance.store import open_db


@dataclass(frozen=True)
class RunUnit:
    stage: str
    version: int | None  # the adapter version; None: the base


@dataclass(frozen=True)
class RunDone:
    unit: RunUnit
    run_id: int
    arm: str
    reused: bool
    device: str


def devices(config: Config) -> list[str]:
    """The devices `evaluation.devices` names (["all"]: the GPUs heavy jobs may use)."""
    named = config.settings.evaluation.devices
    if named == ["all"]:
        return resources.job_gpus(config.settings.serve.gpus)
    return list(named)


def spread_runs(
    config: Config,
    evaluation: EvaluationSet,
    units: Sequence[RunUnit],
    on_done: Callable[[RunDone], None] | None = None,
    on_workers: Callable[[dict[str, str]], None] | None = None,
) -> list[RunDone]:
    """Make the runs of `units` over the configured devices; [] when fewer than two.
    `on_workers` hears what each device's worker does ({device: text, "" when idle})."""
    found = devices(config)
    if len(found) < 2 or not units:
        return []

    def on_busy(busy: dict[str, object]) -> None:
        on_workers({d: _doing(unit) for d, unit in busy.items()})

    executor = DeviceExecutor(found, on_busy if on_workers else None)
    done = []
    for result in executor.run(list(dict.fromkeys(units)), _Factory(config, evaluation)):
        done.append(result)
        if on_done:
            on_done(result)
    return done


def _doing(unit: RunUnit | None) -> str:
    if unit is None:
        return ""
    return f"{unit.stage}: {'base' if unit.version is None else f'v{unit.version}'}"


class _Factory:
    """Picklable: each device's process makes its own evaluator."""

    def __init__(self, config: Config, evaluation: EvaluationSet) -> None:
        self.config, self.evaluation = config, evaluation

    def __call__(self) -> Callable[[RunUnit], RunDone]:
        db = open_db(self.config)
        evaluator = Evaluator(self.config, db, ModelPool.from_config(self.config),
                              self.evaluation)  # fmt: skip

        def run(unit: RunUnit) -> RunDone:
            version = None if unit.version is None else registry.get(db, unit.stage, unit.version)
            arm = Arm.of(self.config, evaluator.pool, unit.stage, version)
            made = evaluator.run(unit.stage, arm)
            return RunDone(unit, made.id, made.arm, made.reused, worker_device())

        return run
