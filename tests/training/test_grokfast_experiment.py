"""The Grokfast experiment's bookkeeping (bench/grokfast_experiment.py): the split by task,
the smoothed loss curve and the steps-to-target it reports. No training here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import grokfast_experiment as experiment  # noqa: E402


def rows(tasks: dict[str, int]) -> list[dict]:
    return [{"task": t, "completion": str(i)} for t, n in tasks.items() for i in range(n)]


def test_a_task_is_never_on_both_sides():
    data = rows({f"demo@{sha:02x}": 1 + sha % 2 for sha in range(9)})
    train, heldout = experiment.split_by_task(data, every=4)
    held = {r["task"] for r in heldout}
    assert held == {"demo@00", "demo@04", "demo@08"}
    assert not held & {r["task"] for r in train}
    assert len(train) + len(heldout) == len(data)  # both rows of a two-row task go together


def test_too_few_tasks_to_hold_one_out_is_an_error():
    with pytest.raises(SystemExit, match="too few"):
        experiment.split_by_task(rows({"demo@aa": 2}), every=4)


def run(losses: list[float], heldout: list[float], grokfast: bool) -> dict:
    curve = [{"step": i + 1, "loss": x, "grad_norm": 1.0} for i, x in enumerate(losses)]
    points = [{"step": 4 * i, "loss": x} for i, x in enumerate(heldout)]
    return {"seed": 0, "grokfast": grokfast, "curve": curve, "heldout": points}


def test_steps_to_target_use_the_smoothed_baseline():
    assert experiment.smoothed([4, 2, 0, 2], 2) == [None, 3, 1, 1]
    baseline = run([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [2.0, 1.5, 1.2], grokfast=False)
    faster = run([1.0, 0.7, 0.5, 0.4, 0.3, 0.3, 0.3, 0.3], [2.0, 1.1, 1.3], grokfast=True)
    c = experiment.compare(baseline, faster, window=2)
    assert c.target_half == pytest.approx(0.75) and c.target_end == pytest.approx(0.35)
    assert c.steps_half == (4, 3) and c.steps_end == (8, 5)
    assert c.final_loss == pytest.approx((0.35, 0.3))
    assert c.heldout_base == 2.0 and c.heldout_end == (1.2, 1.3)
    assert c.heldout_best == (1.2, 1.1) and c.heldout_best_step == (8, 4)
    # A run that never gets there says so, rather than counting its last step.
    slower = run([1.0] * 8, [2.0, 2.0, 2.0], grokfast=True)
    assert experiment.compare(baseline, slower, window=2).steps_end == (8, None)
