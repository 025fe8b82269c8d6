"""forged and the GPUs: those `forge serve` holds (serve.gpus) are its alone, heavy jobs get
the others (or none at all, the CPU, when serve holds every one); a job that spreads over
devices holds every free one and puts a worker on each; what each worker does reaches the
job's progress, the dashboard and `forge cycle`."""

from __future__ import annotations

import time

import pytest

from appliance.config import load_config
from appliance.resources import job_gpus
from daemon.forged import Daemon


def test_job_gpus_are_the_visible_ones_but_serves(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert job_gpus() == ["0", "1", "2"]
    assert job_gpus([1]) == ["0", "2"]
    assert job_gpus([0, 1, 2]) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert job_gpus() == []


def _daemon(forge_home, gpus: str) -> Daemon:
    path = forge_home.home / "forge.toml"
    path.write_text(path.read_text() + f"[serve]\ngpus = {gpus}\n")
    daemon = Daemon(load_config())
    daemon.db.close()
    return daemon


def test_forged_gives_heavy_jobs_only_the_gpus_serve_does_not_hold(forge_home, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    daemon = _daemon(forge_home, "[1]")
    assert daemon.job_gpus == ["0", "2"] and daemon.slots == 2
    assert daemon._gpu_env(daemon.job_gpus[1]) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert daemon.state()["serve_gpus"] == [1]


def test_when_serve_holds_every_gpu_heavy_jobs_see_none(forge_home, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    daemon = _daemon(forge_home, "[0, 1]")
    assert daemon.job_gpus == [] and daemon.slots == 1
    assert daemon._gpu_env(None) == {"CUDA_VISIBLE_DEVICES": ""}


def test_a_job_that_spreads_holds_every_free_gpu_and_others_one(forge_home, monkeypatch):
    """With devices ["all"] (the default) a cycle, campaign, evaluation or promotion takes
    every GPU free when it starts, so one cycle keeps them all at work; training takes one;
    a job never takes a GPU another holds, and with none free no heavy job is claimed."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    daemon = _daemon(forge_home, "[3]")
    assert daemon.job_gpus == ["0", "1", "2"]
    for kind in ("cycle", "campaign", "evaluate", "promote"):
        assert daemon.slots_for(kind) == (0, 1, 2), kind
    assert daemon.slots_for("train") == (0,)
    # A training holds GPU 0: a cycle starting now takes the other two.
    daemon.children[7] = (None, (0,))
    assert daemon.slots_for("cycle") == (1, 2)
    assert daemon.held_gpus() == {"7": ["0"]}
    assert daemon._gpu_env(",".join(daemon.job_gpus[s] for s in (1, 2))) == {
        "CUDA_VISIBLE_DEVICES": "1,2"
    }
    daemon.children[8] = (None, (1, 2))
    assert daemon.slots_for("cycle") == () and daemon._free_slots() == []
    assert daemon.state()["job_gpus"] == {"7": ["0"], "8": ["1", "2"]}
    daemon.children.clear()


def test_with_devices_named_or_empty_a_job_holds_one_gpu(forge_home, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    path = forge_home.home / "forge.toml"
    path.write_text(path.read_text() + "[campaign]\ndevices = []\n[evaluation]\ndevices = []\n")
    daemon = _daemon(forge_home, "[]")
    assert daemon.slots_for("cycle") == (0,) and daemon.slots_for("evaluate") == (0,)


def test_each_devices_worker_is_in_the_jobs_progress_and_on_the_dashboard(db):
    """What each device's worker does reaches the job's progress row (with the step's
    count kept beside it) and the dashboard's progress text; a finished step drops it."""
    from appliance.cycle.loop import Step
    from appliance.ops import jobs
    from appliance.ops.work import JobProgress
    from tui.render import progress as render

    job, _ = jobs.enqueue(db, "cycle", key="cycle", heavy=True)
    progress = JobProgress(db, job.id)
    progress.step("evaluate", "evaluate")
    progress.advance("evaluate", 1, 4, "scope: base on 1")
    progress.workers({"0": "scope: v3", "1": ""})
    row = jobs.get(db, job.id).progress
    assert row["workers"] == {"0": "scope: v3", "1": ""}
    assert (row["step"], row["done"], row["total"]) == ("evaluate", 1, 4)
    shown = render(row).plain
    assert "GPU 0: scope: v3" in shown and "GPU 1: idle" in shown and "1/4" in shown
    progress.advance("evaluate", 4, 4, "deciding")  # the workers stay beside the count
    row = jobs.get(db, job.id).progress
    assert row["done"] == 4 and row["workers"] == {"0": "scope: v3", "1": ""}
    progress.workers({"cpu0": "demo 1a2b3c4d (3 samples)"})
    assert "cpu0: demo 1a2b3c4d (3 samples)" in render(jobs.get(db, job.id).progress).plain
    progress.done(Step("evaluate", "ok", {}, 1.0))
    row = jobs.get(db, job.id).progress
    assert "workers" not in row and row["completed"]["evaluate"]["status"] == "ok"


def test_forge_cycle_shows_a_line_per_device_while_spread_and_none_after():
    from rich.progress import Progress

    from appliance.cli.evaluation import _Bars

    bars = _Bars(Progress())
    bars.workers({"0": "demo 1a2b3c4d (3 samples)", "1": ""})
    shown = [t.description for t in bars.bars.tasks]
    assert shown == ["  GPU 0: demo 1a2b3c4d (3 samples)", "  GPU 1: [dim]idle[/]"]
    bars.workers({"0": "", "1": "demo 5e6f7a8b (3 samples)"})
    assert [t.description for t in bars.bars.tasks][1].endswith("demo 5e6f7a8b (3 samples)")
    bars.workers({"0": "", "1": ""})
    assert bars.bars.tasks == []


@pytest.mark.slow
def test_forged_gives_a_campaign_every_free_gpu_and_puts_a_worker_on_each(tmp_path, monkeypatch):
    """The whole path with CPU stand-ins for two GPUs (CUDA_VISIBLE_DEVICES=cpu0,cpu1 as
    forged sees it): the campaign job holds both, status says so while it runs, and its
    campaign runs one worker on each, the job's log naming what each did."""
    from appliance.ops.control import request
    from tests.daemon.test_forged import start, stop, wait_done
    from tests.harness.conftest import DEMO, ingest_package, make_home

    settings = ("[harness]\ngold_runs = 1\n[campaign]\nsamples = 1\nmax_tokens = 32\n"
                "context_tokens = 256\n[cycle]\ncommits = 2\n")  # fmt: skip
    config, db = make_home(tmp_path / "home", monkeypatch, settings)
    ingest_package(config, db, DEMO)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "cpu0,cpu1")
    proc = start(config)
    try:
        job_id = request(config, "run", kind="campaign")["job"]["id"]
        held, deadline = None, time.monotonic() + 120
        while held is None and time.monotonic() < deadline:
            held = request(config, "status")["daemon"]["job_gpus"].get(str(job_id))
            time.sleep(0.2)
        job = wait_done(db, job_id, 300)
    finally:
        stop(proc)
    assert held == ["cpu0", "cpu1"]
    assert job.status == "done", job.error
    log = (config.home / job.log).read_text()
    assert "on GPU cpu0,cpu1" in log
    workers = [line.split(" workers ", 1)[1] for line in log.splitlines() if " workers " in line]
    assert any("cpu0: demo " in w for w in workers) and any("cpu1: demo " in w for w in workers)
    assert workers[-1] == "cpu0: idle, cpu1: idle"
    assert db.execute("SELECT COUNT(*) FROM triples").fetchone()[0] == 2
