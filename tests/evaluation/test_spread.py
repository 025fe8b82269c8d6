"""An evaluation's runs spread over devices: two CPU workers stand in for two GPUs (the
same code path: one spawned process per device with its own pool), with the real SmolLM2,
index and demo package. Each run is made once, on one device, and answers exactly as the
same run made in the evaluating process."""

from __future__ import annotations

import dataclasses

import pytest

from appliance.evaluation.compare import evaluate
from tests.evaluation.test_evaluation import SETTINGS, register
from tests.harness.conftest import demo_home_with


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    settings = SETTINGS.replace("max_examples = 3", "max_examples = 2")  # answers: 96 tokens
    with demo_home_with(tmp_path_factory, "spread", settings) as (config, db):
        yield config, db


def _with(config, **evaluation):
    settings = config.settings.model_copy(
        update={"evaluation": config.settings.evaluation.model_copy(update=evaluation)}
    )
    return dataclasses.replace(config, settings=settings)


def _answers(db, run_id: int) -> dict[str, str]:
    rows = db.execute("SELECT example, answer FROM eval_examples WHERE run_id = ?", [run_id])
    return dict(rows.fetchall())


def test_runs_spread_over_two_devices_answer_as_in_one_process(home):
    config, db = home
    register(config, db, "task_analysis", 1, seed=5)
    alone = evaluate(config, db, "task_analysis")
    assert [r.reused for r in alone.runs] == [False, False]

    # Greedy decoding: the seed changes only the runs' key, so both runs are made again.
    spread_config = _with(config, devices=["cpu0", "cpu1"], seed=1)
    seen, workers = [], []
    spread = evaluate(spread_config, db, "task_analysis",
                      on_progress=lambda *event: seen.append(event),
                      on_workers=workers.append)  # fmt: skip
    assert {r.id for r in spread.runs}.isdisjoint({r.id for r in alone.runs})
    # Made by the workers, each once, then found finished by the comparison.
    assert [r.reused for r in spread.runs] == [True, True]
    made = [name for _, name, _, _ in seen if " on cpu" in name]
    assert len(made) == 2
    assert {name.split(" on ")[0] for name in made} == {"task_analysis-v1", "base"}
    assert {name.split(" on ")[1] for name in made} <= {"cpu0", "cpu1"}
    # What each device's worker did, as the dashboard shows it: both runs were seen
    # running, and at the end both workers are idle.
    assert all(set(w) == {"cpu0", "cpu1"} for w in workers), workers
    assert {t for w in workers for t in w.values()} >= {"task_analysis: v1", "task_analysis: base"}
    assert workers[-1] == {"cpu0": "", "cpu1": ""}
    for ours, theirs in zip(spread.runs, alone.runs, strict=True):
        assert _answers(db, ours.id) == _answers(db, theirs.id) != {}

    def values(ev):  # the bootstrap intervals follow the seed; the values do not
        return [(m["metric"], m["candidate"], m["baseline"]) for m in ev.report()["metrics"]]

    assert values(spread) == values(alone)


def test_fewer_than_two_devices_spread_nothing(home):
    from appliance.evaluation import spread

    config, _ = home
    one = _with(config, devices=["cpu0"])
    assert spread.devices(one) == ["cpu0"]
    assert spread.spread_runs(one, None, [spread.RunUnit("scope", 1)]) == []
    assert spread.spread_runs(config, None, [spread.RunUnit("scope", 1)]) == []
