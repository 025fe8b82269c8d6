"""`forge gc` on a FORGE_HOME after a real campaign and a real (small) training run: the
finished run loses its checkpoints and its adapter still serves; old logs, reports,
backups, unused environments and unreferenced model calls go; what anything (a triple, a
dataset row, an evaluation, an operator's run) refers to stays; `--dry-run` removes nothing."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner

from appliance import registry
from appliance.campaign.run import run_campaign
from appliance.cli import cli
from appliance.datasets.versions import build, rows_of
from appliance.ops import jobs
from appliance.ops.gc import referenced_call_ids
from appliance.store.backup import backups, make_backup
from appliance.training.checkpoints import list_checkpoints
from appliance.training.job import train_stage
from tests.harness.conftest import DEMO, ingest_package, make_home
from tests.training.conftest import logprobs_without_and_with

SETTINGS = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 48
context_tokens = 384
[training]
max_seq_len = 512
checkpoint_every = 1
threads = 1
[retention]
cycle_reports = 2
"""
OLD = time.time() - 200 * 86400  # older than every retention limit
# The module's home runs a real campaign and a real training run first (minutes on 2 cores).
pytestmark = pytest.mark.timeout(1500)


def _age(path, when=OLD) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (when, when), follow_symlinks=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory, training_base):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("gc") / "home", monkeypatch, SETTINGS)
        ingest_package(config, db, DEMO)
        list(run_campaign(config, db, "demo", commits=1, samples=1))
        assert build(config, db, "task_analysis", "sft") is not None
        adapter = train_stage(config, db, "task_analysis", max_steps=2)
        _litter(config, db)
        yield config, db, adapter


def _litter(config, db) -> None:
    """What months of running leave besides the real run: old logs, reports, backups, an
    abandoned run, environments nobody needs, and old calls nothing refers to."""
    runs = config.dir("runs")
    (runs / "jobs").mkdir(exist_ok=True)
    job, _ = jobs.enqueue(db, "cycle", key="cycle")  # live: its log stays, however old
    for name in ("job-100.log", f"job-{job.id}.log", "../crash-20200101T000000Z.log"):
        (runs / "jobs" / name).write_text("log\n")
        _age(runs / "jobs" / name)
    (runs / "jobs" / "job-2.log").write_text("recent\n")
    (runs / "cycle").mkdir(exist_ok=True)
    for day in (1, 2, 3, 4):
        (runs / "cycle" / f"cycle-2026-01-0{day}T000000+0000.json").write_text("{}")
    for name, when in (("abandoned", OLD), ("resumable", time.time())):
        step = runs / "train" / name / "checkpoints" / "step-1"
        step.mkdir(parents=True)
        (step / "state.pt").write_bytes(b"x" * 1000)
        (step / "trainer.json").write_text("{}")
        (runs / "train" / name / "train.log").write_text("log\n")
        _age(runs / "train" / name, when)
    for folder, marker in (("0" * 24, "forge-env.json"), (".projects/" + "1" * 24,
                                                          "forge-project.json")):  # fmt: skip
        path = config.dir("envs") / folder
        path.mkdir(parents=True)
        (path / marker).write_text("{}")
        (path / "site.py").write_text("x = 1\n" * 100)
        _age(path)
    for env in config.dir("envs").iterdir():  # the demo's own: old, but the corpus needs it
        if len(env.name) == 24:
            _age(env)
    make_backup(config)  # (it prunes what its retention drops: the old one comes after)
    (config.dir("backups") / "forge-20200101T000000.000000Z-0badf00d.db").write_bytes(b"x")
    old = (datetime.now(UTC) - timedelta(days=200)).isoformat(timespec="milliseconds")
    db.execute("UPDATE model_calls SET at = ?", [old])  # every call old: refs keep them
    newest = db.execute("SELECT MAX(id) FROM model_calls").fetchone()[0]
    for at in (old, old, old, datetime.now(UTC).isoformat(timespec="milliseconds")):
        db.execute(
            "INSERT INTO model_calls (at, kind, role, base, base_sha256, prompt, params, output, "
            "finish_reason, prompt_tokens, completion_tokens, duration_s) SELECT ?, kind, role, "
            "base, base_sha256, prompt, params, output, finish_reason, prompt_tokens, "
            "completion_tokens, duration_s FROM model_calls WHERE id = ?",
            [at, newest],
        )
    # An operator's run (forge solve) refers to the third old call: it stays.
    kept = db.execute("SELECT MAX(id) FROM model_calls WHERE at = ?", [old]).fetchone()[0]
    db.execute(
        "INSERT INTO solve_runs (package_id, package, snapshot_sha, contains, task, stages, "
        "call_ids, edits, patch, outcome, reason, seconds, started_at, finished_at) "
        "SELECT id, 'demo', '0', '[]', 'a task', '{}', ?, '[]', '', 'no_diff', '', '{}', ?, ? "
        "FROM packages LIMIT 1",
        [json.dumps([kept]), old, old],
    )


def _tree(config) -> dict[str, int]:
    return {
        str(p.relative_to(config.home)): p.stat().st_size
        for p in config.home.rglob("*")
        if p.is_file() and not p.name.startswith("forge.db") and p.name != "gc.lock"
    }


def _calls(db) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM model_calls")}


def test_dry_run_lists_everything_and_removes_nothing(home):
    config, db, adapter = home
    run_dir = config.home / adapter.metrics["run_dir"]
    assert list_checkpoints(run_dir), "the real run left its rolling checkpoints"
    before, calls = _tree(config), _calls(db)
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["gc", "--dry-run", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["dry_run"] and report["freed_bytes"] > 0
    found = {(r["what"], r["path"]) for r in report["removals"]}
    assert ("checkpoints", f"{adapter.metrics['run_dir']}/checkpoints") in found
    assert ("checkpoints", "runs/train/abandoned/checkpoints") in found
    assert {w for w, _ in found} == {"checkpoints", "environment", "project", "job-log",
                                     "crash-log", "cycle-report", "backup", "call-log"}  # fmt: skip
    assert _tree(config) == before and _calls(db) == calls
    text = runner.invoke(cli, ["gc", "--dry-run"])
    assert text.exit_code == 0 and "would free" in text.output


def test_gc_removes_what_retention_lets_go_and_the_adapter_still_serves(home):
    config, db, adapter = home
    referenced = referenced_call_ids(db)
    assert referenced, "the campaign's triples and the dataset refer to calls"
    solved = db.execute("SELECT call_ids FROM solve_runs").fetchone()[0]
    assert set(json.loads(solved)) <= referenced, "an operator's run keeps its calls"
    calls = _calls(db)
    datasets_before = sorted(p.name for p in config.dir("datasets").rglob("*.jsonl"))
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["gc", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert not report["dry_run"] and report["by_kind"]["call-log"]["count"] == 1

    run_dir = config.home / adapter.metrics["run_dir"]
    assert not (run_dir / "checkpoints").exists() and list_checkpoints(run_dir) == []
    assert (run_dir / "adapter").is_dir() and (run_dir / "metrics.jsonl").is_file()
    assert (run_dir / "train.log").is_file()
    runs = config.dir("runs")
    assert not (runs / "train" / "abandoned" / "checkpoints").exists()
    assert (runs / "train" / "abandoned" / "train.log").is_file()
    assert (runs / "train" / "resumable" / "checkpoints" / "step-1").is_dir()
    assert sorted(p.name for p in (runs / "jobs").iterdir()) == sorted(
        ["job-2.log", f"job-{jobs.jobs(db, ('queued',))[0].id}.log"]
    )
    assert not list(runs.glob("crash-*.log"))
    assert len(list((runs / "cycle").glob("cycle-*.json"))) == 2
    assert not (config.dir("envs") / ("0" * 24)).exists()
    assert not (config.dir("envs") / ".projects" / ("1" * 24)).exists()
    assert any(len(p.name) == 24 for p in config.dir("envs").iterdir()), "the demo's env stays"
    assert [b.path.name for b in backups(config)] != [] and not any(
        "0badf00d" in b.path.name for b in backups(config)
    )
    left = _calls(db)
    assert referenced <= left and len(calls - left) == 2  # the two old, unreferenced ones
    assert sorted(p.name for p in config.dir("datasets").rglob("*.jsonl")) == datasets_before
    assert [a.name for a in registry.adapters(db)] == [adapter.name]

    # The finished run's adapter still loads and changes what the model says.
    row = rows_of(db, "task_analysis", "sft", 1)[0]
    plain, tuned = logprobs_without_and_with(config, row, adapter.name, config.home / adapter.path)
    assert not np.allclose(plain, tuned)

    again = json.loads(runner.invoke(cli, ["gc", "--json"]).output)
    assert again["removals"] == []  # nothing more to do
