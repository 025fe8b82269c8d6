"""Campaigns with the real SmolLM2 model, the real index and the real sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from appliance.campaign.run import run_campaign
from appliance.campaign.store import summary
from tests.conftest import CALC_V2, PYPROJECT, TEST_V1, RepoBuilder, build
from tests.harness.conftest import DEMO, ingest_package, make_home

SUB_TEST = "from calc import sub\n\n\ndef test_sub():\n    assert sub(3, 1) == 2\n"
# Small answers and contexts keep a sample to seconds on 2 CPU cores.
FAST = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 48
context_tokens = 384
"""


@pytest.fixture(scope="module")
def campaign_home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("campaign") / "home", monkeypatch, FAST)
        ingest_package(config, db, DEMO)
        yield config, db


def test_a_campaign_records_triples_with_outcomes_alignment_and_pairs(campaign_home):
    config, db = campaign_home
    results = list(run_campaign(config, db, "demo", commits=2, samples=1))
    assert len(results) == 2
    assert {r.outcome for r in results} <= {"resolved", "failed", "not_applied", "infra"}
    rows = db.execute(
        "SELECT sha, sample, stages, call_ids, outcome, alignment, snapshot_sha FROM triples"
    ).fetchall()
    assert len(rows) == 2
    for sha, _sample, stages, call_ids, _outcome, alignment, snapshot_sha in rows:
        stages, call_ids, alignment = (
            json.loads(stages),
            json.loads(call_ids),
            json.loads(alignment),
        )
        assert {"task_analysis", "scope", "plan", "code"} <= set(stages)
        assert alignment["real_files"] and "plan_files" in alignment
        assert snapshot_sha != sha
        for stage in stages.values():
            # The prompt the model received (logged by the pool) holds the stage's context.
            prompt = db.execute(
                "SELECT prompt FROM model_calls WHERE id = ?", [stage["call_id"]]
            ).fetchone()[0]
            for item in stage["context"]["items"]:
                assert item["text"] in prompt
        assert len(call_ids) == len(stages)
    pairs = db.execute("SELECT stage, COUNT(*) FROM synthetic_pairs GROUP BY stage").fetchall()
    assert dict(pairs) == dict.fromkeys(["code", "plan", "precision", "scope", "task_analysis"], 2)
    state = summary(db, 1)
    assert state.triples == 2 and state.commits == 2
    assert state.stage_calls["task_analysis"] == 2
    # Running again does nothing: every unit is recorded.
    assert list(run_campaign(config, db, "demo", commits=2, samples=1)) == []
    from click.testing import CliRunner

    from appliance.cli import cli

    out = CliRunner(env={"FORGE_HOME": str(config.home)}).invoke(
        cli, ["campaign", "show", "demo", "--json"]
    )
    assert out.exit_code == 0, out.output
    (shown,) = json.loads(out.output)
    assert shown["triples"] == 2 and shown["commits"] == 2
    assert sum(shown["outcomes"].values()) == 2


def test_a_killed_campaign_resumes_without_duplicates(campaign_home):
    config, db = campaign_home
    env = os.environ | {"FORGE_HOME": str(config.home)}
    command = [sys.executable, "-m", "appliance", "campaign", "run", "demo", "--commits", "3",
               "--samples", "2", "--json"]  # fmt: skip
    before = db.execute("SELECT COUNT(*) FROM triples").fetchone()[0]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while db.execute("SELECT COUNT(*) FROM triples").fetchone()[0] < before + 1:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-way: no chance to clean up
    proc.wait()
    killed_at = db.execute("SELECT COUNT(*) FROM triples").fetchone()[0]
    assert killed_at < 6
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    rows = db.execute("SELECT sha, sample FROM triples").fetchall()
    assert len(rows) == len(set(rows)) == 6  # 3 commits × 2 samples, each once
    ran = json.loads(out.stdout)["ran"]
    assert len(ran) == 6 - killed_at  # the finished units were not run again


def test_a_file_from_after_the_parent_never_reaches_a_stage(tmp_path, monkeypatch, wheelhouse):
    repo = RepoBuilder(tmp_path / "future-src")
    repo.commit(
        "Create calculator with addition",
        {"pyproject.toml": PYPROJECT, "src/calc.py": "def add(a, b):\n    return a + b\n",
         "tests/test_calc.py": TEST_V1},
    )  # fmt: skip
    repo.commit(
        "Add subtraction to the calculator",
        {
            "src/calc.py": CALC_V2,
            "src/future_secret.py": "FUTURE_MARKER_7731 = 'from after the parent'\n",
            "tests/test_sub.py": SUB_TEST,
        },
    )
    package = build(repo, tmp_path / "future-pkg", wheelhouse, name="future", version="1.0").path
    # One task commit: with a hold-out it would be held out (the newest), so none here.
    config, db = make_home(tmp_path / "home", monkeypatch,
                           FAST + "[evaluation]\nholdout_fraction = 0.0\n")  # fmt: skip
    ingest_package(config, db, package)
    results = list(run_campaign(config, db, "future", samples=2))
    assert len(results) == 2
    for (stages,) in db.execute("SELECT stages FROM triples").fetchall():
        for stage in json.loads(stages).values():
            paths = {item["path"] for item in stage["context"]["items"]}
            assert "src/future_secret.py" not in paths
    prompts = db.execute("SELECT prompt FROM model_calls").fetchall()
    assert prompts and not any(
        "FUTURE_MARKER_7731" in p or "future_secret" in p for (p,) in prompts
    )
