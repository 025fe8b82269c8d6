"""`forge train STAGE` end to end: a real campaign's dataset → a LoRA run in a child
process → the GGUF export → a candidate adapter that loads in the pool."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from appliance.campaign.run import run_campaign
from appliance.cli import cli
from appliance.datasets.versions import build, rows_of
from tests.harness.conftest import DEMO, ingest_package, make_home
from tests.training.conftest import logprobs_without_and_with

SETTINGS = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 48
context_tokens = 384
[training]
lr = 0.005
max_seq_len = 512
checkpoint_every = 1
threads = 1
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory, training_base):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("train") / "home", monkeypatch, SETTINGS)
        ingest_package(config, db, DEMO)
        list(run_campaign(config, db, "demo", commits=1, samples=1))
        assert build(config, db, "task_analysis", "sft") is not None
        yield config, db


def test_train_registers_a_candidate_that_changes_the_stage_output(home):
    config, db = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["train", "task_analysis", "--max-steps", "3", "--json"])
    assert out.exit_code == 0, out.output
    adapter = json.loads(out.output)
    assert adapter["name"] == "task_analysis-v1" and adapter["status"] == "candidate"
    assert adapter["dataset"] == "task_analysis-sft-v1" and adapter["metrics"]["steps"] == 3
    path = config.home / adapter["path"]
    assert path.is_file()
    listed = runner.invoke(cli, ["adapters", "task_analysis", "--json"])
    assert [a["name"] for a in json.loads(listed.output)] == ["task_analysis-v1"]
    # The candidate loads in the pool and moves the stage's answer towards its dataset.
    row = rows_of(db, "task_analysis", "sft", 1)[0]
    plain, tuned = logprobs_without_and_with(config, row, adapter["name"], path)
    assert not np.allclose(plain, tuned)
    # A second run makes the next version, never replacing the first.
    again = runner.invoke(cli, ["train", "task_analysis", "--max-steps", "3", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["name"] == "task_analysis-v2"


def test_train_refuses_without_a_dataset(home):
    config, _ = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["train", "precision", "--dpo"])
    assert out.exit_code == 2 and "no dpo dataset for precision" in out.output
    out = runner.invoke(cli, ["train", "poetry"])
    assert out.exit_code == 2 and "unknown stage" in out.output
