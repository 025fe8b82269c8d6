"""Held-out evaluation with the real SmolLM2, the real index and the real sandbox: the
held-out set, per-example outcomes stored for both arms, reuse, the gate on real answers,
and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from appliance import registry
from appliance.campaign.run import plan_units
from appliance.cli import cli
from appliance.digest import sha256_file
from appliance.evaluation import heldout
from appliance.evaluation.compare import evaluate
from appliance.evaluation.run import Arm, Evaluator
from appliance.models.gguf_adapter import write_adapter_gguf
from appliance.models.manifest import read_manifest
from appliance.packages.split import Holdout
from appliance.serving.bench import synthetic_adapter
from appliance.serving.pool import ModelPool
from appliance.store import transaction
from tests.harness.conftest import DEMO, ingest_package, make_home

SETTINGS = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 96
context_tokens = 384
[evaluation]
max_examples = 3
max_tokens = 96
holdout_fraction = 0.2
min_tasks = 1  # three tasks: these tests are about the machinery, not the evidence
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("evaluation") / "home", monkeypatch,
                               SETTINGS)  # fmt: skip
        ingest_package(config, db, DEMO)
        yield config, db


def register(config, db, stage: str, version: int, *, zero: bool = False, seed: int = 0) -> str:
    """An adapter file for the real base, recorded as a candidate of `stage`."""
    base = read_manifest(config.models_manifest).for_role("reasoning")
    out = config.dir("adapters") / stage / f"{stage}-v{version}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    if zero:  # a LoRA whose B is zero: exactly the base, so every answer ties
        rng = np.random.default_rng(0)
        a = rng.normal(0, 0.04, (8, 576)).astype(np.float32)
        b = np.zeros((576, 8), np.float32)
        write_adapter_gguf(out, "llama", 16.0, [("blk.0.attn_q.weight", a, b)])
    else:
        synthetic_adapter(base.path, out, seed=seed)
    with transaction(db):
        db.execute(
            "INSERT INTO adapters (stage, version, kind, dataset, base, base_sha256, "
            "hyperparameters, metrics, path, sha256, created_at) "
            "VALUES (?, ?, 'sft', 'test', ?, ?, '{}', '{}', ?, ?, '2026-12-01T00:00:00')",
            [stage, version, base.name, base.sha256, str(out.relative_to(config.home)),
             sha256_file(out)],
        )  # fmt: skip
    return f"{stage}-v{version}"


def test_held_out_commits_are_the_evaluation_set_and_never_a_campaign_unit(home):
    config, db = home
    holdout = Holdout.of(config, db)
    evaluation = heldout.evaluation_set(config, db)
    assert evaluation.source == heldout.HELD_OUT_COMMITS
    assert "held-out commits" in evaluation.note and "the newest 7 commits" in evaluation.note
    assert 1 <= len(evaluation.commits) <= 3
    assert all(holdout.held_out("demo", s.sha) for s in evaluation.commits)
    units, usable = plan_units(config, db, "demo", commits=6, samples=1)
    assert len(usable) == 6
    assert not any(holdout.held_out("demo", u.sha) for u in units)
    assert not {s.sha for s in evaluation.commits} & {u.sha for u in units}


def test_the_hold_out_is_the_newest_commits_of_each_package_name():
    oldest_first = [f"{i:040x}" for i in range(35)]
    cut = Holdout.cut(0.2, {"demo": oldest_first, "calc": oldest_first[:3]})
    assert [s for s in oldest_first if cut.held_out("demo", s)] == oldest_first[-7:]
    assert [s for s in oldest_first if cut.held_out("calc", s)] == oldest_first[2:3]
    assert not cut.held_out("other", oldest_first[-1])  # a name it never saw holds nothing
    assert not cut.trainable("demo", "train", oldest_first[-1])
    assert cut.trainable("demo", "train", oldest_first[0])
    assert not cut.trainable("demo", "eval", oldest_first[0])  # the eval side, always
    assert Holdout.cut(0.2, {"demo": oldest_first}).digest == (
        Holdout.cut(0.2, {"demo": list(oldest_first)}).digest
    )
    none = Holdout.cut(0.0, {"demo": oldest_first})
    assert not any(none.held_out("demo", s) for s in oldest_first)
    assert none.to_dict() == {"rule": "newest", "fraction": 0.0, "packages": {"demo": []}}
    assert none.digest != cut.digest


def test_a_zero_adapter_ties_the_base_and_the_gate_blocks_it(home):
    config, db = home
    name = register(config, db, "scope", 1, zero=True)
    evaluation = evaluate(config, db, "scope")
    assert evaluation.candidate == name and evaluation.baseline == "base"
    assert evaluation.decision.verdict == "reject"
    assert all(m.delta == 0 and m.p_value == 1 for m in evaluation.decision.metrics)
    assert {m.metric for m in evaluation.decision.metrics} == {"accuracy", "relevant_recall"}
    # Every per-example outcome is stored, for both arms, pair by pair.
    ours, theirs = (r.id for r in evaluation.runs)
    count = "SELECT COUNT(*) FROM eval_outcomes WHERE run_id = ?"
    n = db.execute(count, [ours]).fetchone()[0]
    assert n > 0 and n == db.execute(count, [theirs]).fetchone()[0]
    examples = db.execute("SELECT COUNT(*) FROM eval_examples WHERE run_id = ?", [ours])
    assert examples.fetchone()[0] == evaluation.examples >= 1
    stored = db.execute("SELECT verdict, report FROM gate_decisions WHERE id = ?",
                        [evaluation.decision_id]).fetchone()  # fmt: skip
    assert stored[0] == "reject" and json.loads(stored[1])["source"] == heldout.HELD_OUT_COMMITS


def test_a_finished_run_is_reused_and_decides_the_same(home):
    config, db = home
    first = evaluate(config, db, "scope", 1)
    again = evaluate(config, db, "scope", 1)
    assert all(r.reused for r in again.runs)
    assert [m.to_dict() for m in again.decision.metrics] == [
        m.to_dict() for m in first.decision.metrics
    ]
    # The same verdict on the same two runs is the decision already stored, not a second
    # one (a cycle killed between deciding and promoting decides once).
    assert again.decision_id == first.decision_id
    assert db.execute("SELECT COUNT(*) FROM gate_decisions").fetchone()[0] == 1


def test_a_changed_adapter_answers_differently_and_is_judged_pair_by_pair(home):
    config, db = home
    register(config, db, "precision", 1, seed=3)
    evaluation = evaluate(config, db, "precision")
    metrics = {m.metric: m for m in evaluation.decision.metrics}
    assert set(metrics) == {"accuracy", "primary_recall"}
    for m in metrics.values():  # per-task fractions, paired task by task
        assert m.kind == "continuous" and m.unit == "task"
        assert m.counts["better"] + m.counts["worse"] + m.counts["same"] == m.n
        assert m.n == evaluation.examples
        assert 0 <= m.p_value <= 1
    answers = db.execute(
        "SELECT e.answer FROM eval_examples e JOIN eval_runs r ON r.id = e.run_id "
        "WHERE r.stage = 'precision' ORDER BY e.example, r.adapter"
    ).fetchall()
    assert len(answers) == 2 * evaluation.examples


def test_code_is_judged_by_the_harness(home):
    config, db = home
    register(config, db, "code", 1, zero=True)
    evaluation = evaluate(config, db, "code")
    (resolved,) = evaluation.decision.metrics
    assert resolved.metric == "resolved" and resolved.delta == 0
    details = [json.loads(r[0]) for r in db.execute(
        "SELECT detail FROM eval_examples WHERE run_id = ?", [evaluation.runs[0].id])]  # fmt: skip
    assert details and all(d["verdict"]["verdict"] for d in details)


def test_a_plan_is_judged_by_the_code_it_leads_to_written_in_the_plans_batch(home):
    config, db = home
    pool = ModelPool.from_config(config)
    try:
        evaluator = Evaluator(config, db, pool, heldout.evaluation_set(config, db))
        run = evaluator.run("plan", Arm.of(config, pool, "plan", None))  # the base's run
    finally:
        pool.close()
    rows = db.execute("SELECT detail FROM eval_examples WHERE run_id = ?", [run.id])
    details = [json.loads(r[0]) for r in rows]
    assert len(details) == len(evaluator.examples("plan")) >= 2
    ids = ",".join(str(d["code_call_id"]) for d in details)
    rows = db.execute(f"SELECT id, role, extra FROM model_calls WHERE id IN ({ids})")
    calls = {row[0]: (row[1], json.loads(row[2])) for row in rows}
    # The code stage's answers to one batch of plans were decoded as one batch, by the coder.
    assert {role for role, _ in calls.values()} == {"coder"}
    assert len({extra["batch"] for _, extra in calls.values()}) == 1
    assert {extra["batch_size"] for _, extra in calls.values()} == {len(details)}
    assert all(d["verdict"]["verdict"] for d in details)


def test_an_eval_package_is_evaluated_on_when_there_is_one(home):
    config, db = home
    with transaction(db):
        db.execute("UPDATE packages SET split = 'eval'")
    try:
        evaluation = heldout.evaluation_set(config, db)
        assert evaluation.source == heldout.EVAL_PACKAGES
        holdout = Holdout.of(config, db)
        assert not all(holdout.held_out("demo", s.sha) for s in evaluation.commits)
        assert plan_units(config, db, "demo", commits=2, samples=1) == ([], [])
    finally:
        with transaction(db):
            db.execute("UPDATE packages SET split = 'train'")


def test_cli_eval_and_decisions(home):
    config, db = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["eval", "scope", "--candidate", "v1", "--json"])
    assert out.exit_code == 3, out.output  # the gate would not promote a tie
    report = json.loads(out.output)
    assert report["verdict"] == "reject" and report["candidate"] == "scope-v1"
    assert all("p_value" in m for m in report["metrics"])
    assert report["unit"] == "task" and report["n_tasks"] == report["examples"]
    assert all(m["unit"] == "task" and len(m["delta_interval"]) == 2 for m in report["metrics"])
    names = {b["name"] for b in report["baselines"]}
    assert {"all-relevant", "all-irrelevant", "first-listed", "longest", "retrieval-top",
            "most-changed", "majority"} <= names  # fmt: skip
    assert all(set(b["scores"]) == {"accuracy", "relevant_recall"} for b in report["baselines"])
    assert set(report["best_baselines"]) == {"accuracy", "relevant_recall"}
    assert report["leak_check"]["leaks"] == 0
    assert report["leak_check"]["tasks"] == report["examples"]
    shown = runner.invoke(cli, ["eval", "scope", "--candidate", "v1"])
    assert shown.exit_code == 3 and "scope-v1 vs base" in shown.output
    assert "trivial baselines" in shown.output and "leak check: 0 of" in shown.output
    listed = runner.invoke(cli, ["decisions", "scope", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output)[0]["verdict"] == "reject"


def test_cli_promote_runs_the_gate_and_force_is_recorded(home):
    config, db = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["promote", "scope", "v1", "--json"])
    assert out.exit_code == 3, out.output
    result = json.loads(out.output)
    assert not result["promoted"] and result["active"] == "base"
    assert result["evaluation"]["verdict"] == "reject"
    assert registry.get(db, "scope", 1).status == "rejected"
    forced = runner.invoke(cli, ["promote", "scope", "v1", "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.output)["active"] == "scope-v1"
    events = registry.history(db, "scope")
    assert [e.action for e in events] == ["reject", "promote"]
    assert events[0].decision_id == result["evaluation"]["decision_id"]
    assert events[1].forced and events[1].decision_id is None
    again = runner.invoke(cli, ["eval", "scope", "--candidate", "v1"])
    assert again.exit_code == 2 and "in service" in again.output
    back = runner.invoke(cli, ["rollback", "scope", "--json"])
    assert back.exit_code == 0 and json.loads(back.output)["to"] == "base"


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["eval", "bogus"], 2, "unknown stage"),
        (["eval", "plan"], 2, "no candidate"),
        (["eval", "scope", "--candidate", "v9"], 2, "no version v9"),
        (["eval", "scope", "--candidate", "x"], 2, "not a version"),
        (["eval", "scope", "--export-examples", "x.jsonl", "--answers", "y"], 2, "examples only"),
        (["eval", "scope", "--answers", "y.jsonl", "--candidate", "v1"], 2, "not both"),
        (["eval", "scope", "--answers", "/nonexistent/answers.jsonl"], 2, "does not exist"),
    ],
)
def test_cli_eval_usage_errors(home, args, code, words):
    config, _ = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, args)
    assert out.exit_code == code, out.output
    assert words in out.output
    assert "Traceback" not in out.output
