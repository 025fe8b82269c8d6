"""The whole of `forge solve` on the demo with a model that has learnt the task: the
operator corrects a run (`forge feedback --patch`), Forge builds the rows, trains the
code stage's adapter on them and puts it in service; the next `forge solve` writes a diff,
`--test` grades it in the sandbox, and `forge feedback good` turns it into operator rows.

Everything is the real thing: SmolLM2 in llama.cpp, the real trainer and GGUF export, the
real sandbox. The adapter learns one answer by heart (a high learning rate on a single
row), which is what lets a 135M model write an edit that applies."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.datasets.versions import rows_of, versions
from appliance.solve import runs
from tests.conftest import GIT_ENV
from tests.harness.conftest import DEMO, demo_home_with

SETTINGS = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 160
context_tokens = 384
[training]
lr = 0.003
max_steps = 10
grad_accum = 1
warmup_ratio = 0
schedule = "constant"
max_seq_len = 512
checkpoint_every = 100
threads = 1
"""
TASK = "Strip surrounding whitespace before parsing quantities"
OLD_SHA = "179ea7f6b408a96b18223084973da13b1d7d63f1"
OLD_PARENT = "7f6635fc210662a5da6d0dc381a16a54777203b3"


def _git(cwd, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", **GIT_ENV}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory, training_base):
    with demo_home_with(tmp_path_factory, "learns", SETTINGS) as (config, db):
        yield config, db


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    path = tmp_path_factory.mktemp("operator") / "demo"
    _git(path.parent, "clone", "-q", "--no-hardlinks", str(DEMO / "repo"), str(path))
    _git(path, "checkout", "-q", "--detach", OLD_PARENT)
    return path


def _forge(config, *args: str):
    out = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None}).invoke(
        cli, list(args)
    )
    return out


def _solve(config, db, checkout):
    out = _forge(config, "solve", "--package", "demo", "--repo", str(checkout), "--test",
                 "--json", TASK)  # fmt: skip
    assert out.exit_code in (0, 3), out.output
    return runs.get(db, json.loads(out.stdout)["id"])


def test_a_taught_code_stage_writes_a_diff_that_the_tests_grade(home, checkout, tmp_path):
    config, db = home
    first = _solve(config, db, checkout)
    fix = tmp_path / "fix.diff"
    fix.write_text(_git(DEMO / "repo", "diff", OLD_PARENT, OLD_SHA))
    told = _forge(config, "feedback", str(first.id), "bad", "--patch", str(fix), "--json")
    assert told.exit_code == 0, told.output
    assert _forge(config, "datasets", "build").exit_code == 0
    (taught,) = [r for r in rows_of(db, "code", "sft", 1) if r.provenance.origin == "operator"]
    trained = _forge(config, "train", "code", "--json")
    assert trained.exit_code == 0, trained.output
    adapter = json.loads(trained.stdout)
    assert adapter["dataset"] == "code-sft-v1" and adapter["metrics"]["rows"] >= 1
    promoted = _forge(config, "promote", "code", adapter["name"], "--force", "--json")
    assert promoted.exit_code == 0, promoted.output

    second = _solve(config, db, checkout)
    code = second.stage("code")
    assert code.adapter == adapter["name"]  # the active version wrote it
    assert second.outcome == "diff", f"{second.reason}: {code.output}"
    assert json.loads(taught.completion) == code.output  # what it was taught
    assert second.patch.startswith("diff --git a/src/metrica/parser.py")
    assert "text.strip())" in second.patch
    # --test graded it in the sandbox: the package's tests, without and with the diff.
    assert second.test["verdict"] == "passed", second.test
    assert second.test["before"]["counts"]["passed"] > 0
    assert second.test["after"]["counts"] == second.test["before"]["counts"]
    assert _git(checkout, "status", "--porcelain") == ""  # the checkout was only read

    liked = _forge(config, "feedback", str(second.id), "good", "--json")
    assert liked.exit_code == 0, liked.output
    assert json.loads(liked.stdout)["run"]["feedback"] == "good"
    built = _forge(config, "datasets", "build", "--json")
    assert built.exit_code == 0, built.output
    taken = {
        (v.stage, r.kind)
        for v in versions(db)
        for r in rows_of(db, v.stage, v.kind, v.version)
        if r.provenance.origin == "operator" and r.provenance.sample == second.id
    }
    # Its own answers became SFT rows of the stages before code; its code answer is the
    # row the stage was taught (the same prompt and answer), stored once.
    assert {("task_analysis", "sft"), ("plan", "sft")} <= taken, taken
    assert ("code", "sft") not in taken
    (code_row,) = [
        r for v in versions(db, "code") if v.kind == "sft"
        for r in rows_of(db, "code", "sft", v.version) if r.provenance.origin == "operator"
    ]  # fmt: skip
    (asked,) = db.execute("SELECT prompt FROM model_calls WHERE id = ?", [code.call_id]).fetchone()
    assert code_row.prompt == asked and code_row.provenance.sample == first.id
