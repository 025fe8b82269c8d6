"""Answers from elsewhere, on the demo's held-out commits: the examples exported for any
answerer, answer files scored with the gate's own metrics and baselines, and the issue's
constant and position-based answer sets, each of which the gate must refuse, while the
real commit's own answers (a real improvement) still pass.

The version in service is the base; its answers are decoded once (real SmolLM2) and
reused by every answer set."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.evaluation.baselines import package_stats
from appliance.evaluation.compare import evaluate_answers, export_examples
from appliance.evaluation.heldout import evaluation_set
from appliance.evaluation.run import Evaluator
from appliance.serving.pool import ModelPool
from tests.harness.conftest import DEMO, ingest_package, make_home

# The newest 11 of the 35 demo commits are held out: enough tasks for the gate (min 10).
SETTINGS = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 96
context_tokens = 640
[evaluation]
holdout_fraction = 0.3
max_tokens = 96
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("answers") / "home", monkeypatch,
                               SETTINGS)  # fmt: skip
        ingest_package(config, db, DEMO)
        yield config, db


@pytest.fixture(scope="module")
def scope_examples(home, tmp_path_factory):
    config, db = home
    out = tmp_path_factory.mktemp("export") / "scope.jsonl"
    written = export_examples(config, db, "scope", out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == len(lines) >= 10
    return lines


def _write(tmp_path, name: str, answers: dict[str, object]):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"id": k, "answer": v}) + "\n" for k, v in answers.items()))
    return path


def _labelled(examples, label_of) -> dict[str, dict]:
    """Per example, every listed candidate labelled by `label_of(index, path, paths)`."""
    return {
        e["id"]: {"files": [{"path": p, "label": label_of(i, p, e["input"]["candidates"])}
                            for i, p in enumerate(e["input"]["candidates"])]}
        for e in examples
    }  # fmt: skip


def test_exported_examples_hold_what_an_answerer_may_see_and_no_answer(scope_examples):
    for line in scope_examples:
        assert set(line) == {"id", "stage", "input", "messages", "prompt", "schema"}
        assert line["stage"] == "scope" and line["id"].startswith("demo@")
        candidates = line["input"]["candidates"]
        assert candidates and all(p in line["prompt"] for p in candidates)
        assert line["messages"][-1]["content"] in line["prompt"]
        enum = line["schema"]["properties"]["files"]["items"]["properties"]["path"]["enum"]
        assert sorted(enum) == sorted(candidates)
        assert "relevant" not in json.dumps(line["input"])  # no label anywhere in the input


@pytest.mark.parametrize(
    "name, label_of",
    [
        ("every file relevant", lambda i, p, ps: "relevant"),
        ("every file irrelevant", lambda i, p, ps: "irrelevant"),
        ("first listed file relevant", lambda i, p, ps: "relevant" if i == 0 else "irrelevant"),
        ("longest path relevant",
         lambda i, p, ps: "relevant" if p == max(ps, key=len) else "irrelevant"),
    ],
)  # fmt: skip
def test_the_gate_refuses_constant_and_position_answers(home, scope_examples, tmp_path,
                                                        name, label_of):  # fmt: skip
    config, db = home
    path = _write(tmp_path, name.replace(" ", "-"), _labelled(scope_examples, label_of))
    evaluation = evaluate_answers(config, db, "scope", path)
    assert evaluation.decision.verdict == "reject", evaluation.decision.render()
    assert evaluation.decision.n_tasks >= 10
    assert evaluation.decision_id is None  # answers from elsewhere are never recorded
    assert evaluation.leak_check.leaks == 0


def test_the_real_commits_answers_are_a_real_improvement_and_pass(home, scope_examples,
                                                                  tmp_path):  # fmt: skip
    # The answer key, taken from the examples the evaluation builds itself: what a model
    # that had learned the task would say.
    config, db = home
    pool = ModelPool.from_config(config)
    try:
        examples = Evaluator(config, db, pool, evaluation_set(config, db)).examples("scope")
    finally:
        pool.close()
    path = _write(tmp_path, "truth", {e.key: e.target for e in examples})
    evaluation = evaluate_answers(config, db, "scope", path)
    assert evaluation.decision.verdict == "promote", evaluation.decision.render()
    best = evaluation.decision.baselines
    improved = [m for m in evaluation.decision.metrics if m.outcome == "improved"]
    assert improved and all(m.candidate > best[m.metric].value for m in improved)
    # "every file relevant" recalls every relevant file too: recall alone could not pass
    recall = next(m for m in evaluation.decision.metrics if m.metric == "relevant_recall")
    assert recall.candidate == best["relevant_recall"].value == 1.0


def test_most_changed_files_as_the_task_analysis_answer_is_refused(home, tmp_path):
    config, db = home
    out = tmp_path / "task_analysis.jsonl"
    export_examples(config, db, "task_analysis", out)
    examples = [json.loads(line) for line in out.read_text().splitlines()]
    evaluation = evaluation_set(config, db)
    stats = package_stats(config, db, evaluation.commits)
    specs = {s.sha: s for s in evaluation.commits}
    answers = {
        e["id"]: {"summary": "", "kind": "feature",
                  "files": stats.most_changed(specs[e["id"].rsplit("@", 1)[1]], 2)}
        for e in examples
    }  # fmt: skip
    result = evaluate_answers(config, db, "task_analysis", _write(tmp_path, "top2", answers))
    assert result.decision.verdict == "reject", result.decision.render()


def test_cli_scores_an_answers_file_and_refuses_a_bad_one(home, scope_examples, tmp_path):
    config, _ = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    path = _write(tmp_path, "irrelevant", _labelled(scope_examples, lambda i, p, ps: "irrelevant"))
    out = runner.invoke(cli, ["eval", "scope", "--answers", str(path), "--json"])
    assert out.exit_code == 3, out.output
    report = json.loads(out.output)
    assert report["verdict"] == "reject" and report["candidate"] == "answers:irrelevant.jsonl"
    assert report["unit"] == "task" and report["n_tasks"] >= 10
    assert report["leak_check"]["leaks"] == 0 and report["baselines"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "demo@0000", "answer": {}}\n')
    refused = runner.invoke(cli, ["eval", "scope", "--answers", str(bad)])
    assert refused.exit_code == 2 and "bad.jsonl:1" in refused.output, refused.output
    assert "Traceback" not in refused.output
