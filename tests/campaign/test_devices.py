"""A campaign spread over devices (`campaign.devices`): one worker process per device,
each seeing only its own, units handed out from one queue, each recorded exactly once.
CPU stand-ins ("cpu0", "cpu1") take the GPUs' place: the same code path, real SmolLM2."""

from __future__ import annotations

import pytest

from appliance.campaign.executor import DeviceExecutor
from appliance.campaign.run import executor_for, run_campaign
from tests.harness.conftest import demo_home_with

SETTINGS = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 32
context_tokens = 256
devices = ["cpu0", "cpu1"]
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with demo_home_with(tmp_path_factory, "devices", SETTINGS) as (config, db):
        yield config, db


def test_units_are_spread_over_the_devices_and_recorded_once(home):
    config, db = home
    executor = executor_for(config)
    assert isinstance(executor, DeviceExecutor) and executor.devices == ["cpu0", "cpu1"]
    workers: list[dict[str, str]] = []
    results = list(run_campaign(config, db, "demo", commits=2, samples=1,
                                on_workers=workers.append))  # fmt: skip
    assert len(results) == 2 and {r.device for r in results} == {"cpu0", "cpu1"}
    # What each device's worker did, as the job's progress row and the dashboard show it.
    busy = {d: t for w in workers for d, t in w.items() if t}
    assert set(busy) == {"cpu0", "cpu1"}, workers
    assert all(t.startswith("demo ") and t.endswith("(1 sample)") for t in busy.values())
    assert workers[-1] == {"cpu0": "", "cpu1": ""}
    rows = db.execute("SELECT sha, sample FROM triples").fetchall()
    assert len(rows) == len(set(rows)) == 2
    assert {(r.sha, r.sample) for r in results} == set(rows)
    # Run again: nothing left to do, on any device.
    assert list(run_campaign(config, db, "demo", commits=2, samples=1)) == []


def _boom(unit):
    raise RuntimeError(f"unit {unit} failed")


def _failing_worker():
    return _boom


def test_a_failing_unit_is_raised_and_the_workers_stop():
    with pytest.raises(RuntimeError, match="unit 1 failed"):
        list(DeviceExecutor(["cpu0"]).run([1, 2], _failing_worker))
    with pytest.raises(ValueError):
        DeviceExecutor([])
