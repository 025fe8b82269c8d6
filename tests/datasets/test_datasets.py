"""Per-stage datasets from a real campaign on the demo package (SmolLM2, the sandbox)."""

from __future__ import annotations

import json

import pytest

from appliance.campaign.run import run_campaign
from appliance.config import load_config
from appliance.datasets import gates
from appliance.datasets.rows import DatasetRow, Provenance, _Attempt, _task_rows, candidate_rows
from appliance.datasets.versions import (
    DatasetRefused,
    build,
    export,
    rows_of,
    training_mix,
    versions,
)
from appliance.packages.split import Holdout
from appliance.serving.calllog import ModelCall
from appliance.store import transaction
from tests.harness.conftest import DEMO, ingest_package, make_home

FAST = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 48
context_tokens = 384
[datasets]
max_invalid_json_rate = 1.0
max_empty_rate = 1.0
max_token_limit_rate = 1.0
max_runaway_rate = 1.0
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("datasets") / "home", monkeypatch, FAST)
        ingest_package(config, db, DEMO)
        list(run_campaign(config, db, "demo", commits=2, samples=2))
        yield config, db


def test_rows_carry_the_logged_prompt_and_provenance(home):
    config, db = home
    version = build(config, db, "code", "sft")
    assert version.version == 1 and version.status == "ok"
    rows = rows_of(db, "code", "sft", 1)
    assert {r.task.split("@")[0] for r in rows} == {"demo"}
    for row in rows:
        call = db.execute(
            "SELECT prompt, messages, base_sha256 FROM model_calls WHERE id = ?",
            [row.provenance.call_id],
        ).fetchone()
        assert row.prompt == call[0] and row.messages == json.loads(call[1])
        prov = row.provenance
        assert prov.base_sha256 == call[2] and prov.forge_revision != ""
        assert {"temperature", "seed", "max_tokens"} <= set(prov.params)
        json.loads(row.completion)  # the real commit's edits, as the stage answers
    # The real commit's answer: one SFT row per task (no sample resolved with SmolLM2).
    assert len({r.task for r in rows}) == 2


def test_dpo_rows_pair_within_a_task(home):
    config, db = home
    version = build(config, db, "code", "dpo")
    rows = rows_of(db, "code", "dpo", version.version)
    assert rows
    for row in rows:
        assert row.chosen != row.rejected
        call = db.execute(
            "SELECT output FROM model_calls WHERE id = ?", [row.provenance.call_id]
        ).fetchone()
        assert call[0] == row.rejected  # the sample's own answer, to its own prompt
        sha = row.task.split("@")[1]
        target = db.execute(
            "SELECT target FROM synthetic_pairs WHERE sha = ? AND stage = 'code'", [sha]
        ).fetchone()[0]
        assert json.loads(row.chosen) == json.loads(target)  # same task, never another


def test_a_resolved_sample_that_edited_test_infrastructure_is_never_learned(home):
    """Grading flags an edit to conftest, startup hooks or pytest's configuration or
    internals; such a sample may have resolved, but only ever as a DPO rejected side."""
    config, db = home
    keep = Holdout.of(config, db).trainable
    triple_id, sha, stages = db.execute(
        "SELECT id, sha, stages FROM triples ORDER BY id LIMIT 1"
    ).fetchone()
    call_id = json.loads(stages)["code"]["call_id"]
    output = db.execute("SELECT output FROM model_calls WHERE id = ?", [call_id]).fetchone()[0]
    saved = db.execute("SELECT outcome, grading FROM triples WHERE id = ?", [triple_id]).fetchone()
    flagged = json.dumps({"flags": ["conftest: tests/conftest.py"]})
    try:
        with transaction(db):
            db.execute(
                "UPDATE triples SET outcome = 'resolved', grading = '{}' WHERE id = ?", [triple_id]
            )
        mine = [r for r in candidate_rows(db, "code", keep) if r.provenance.call_id == call_id]
        assert "resolved sample" in [r.source for r in mine if r.kind == "sft"]  # unflagged
        with transaction(db):
            db.execute("UPDATE triples SET grading = ? WHERE id = ?", [flagged, triple_id])
        rows = [r for r in candidate_rows(db, "code", keep) if r.task.endswith(sha)]
        assert all(r.source != "resolved sample" for r in rows)
        assert all(r.chosen != output for r in rows if r.kind == "dpo")
        assert any(r.rejected == output for r in rows if r.kind == "dpo")
    finally:
        with transaction(db):
            db.execute(
                "UPDATE triples SET outcome = ?, grading = ? WHERE id = ?", [*saved, triple_id]
            )


def test_eval_packages_and_held_out_commits_never_reach_a_dataset(home):
    config, db = home
    keep = Holdout.of(config, db).trainable
    rows = candidate_rows(db, "precision", keep)
    tasks = {r.task for r in rows}
    assert len(tasks) == 2
    # A commit held out for evaluation gives no row, whatever the campaign recorded.
    held = sorted(tasks)[0].split("@")[1]
    assert {
        r.task for r in candidate_rows(db, "precision", lambda name, split, sha: sha != held)
    } == (tasks - {sorted(tasks)[0]})
    holdout = Holdout.of(config, db)
    assert not any(holdout.held_out(*t.split("@")) for t in tasks)  # campaign skipped
    # A package on the eval side gives nothing at all, and no version is made from it.
    with transaction(db):
        db.execute("UPDATE packages SET split = 'eval'")
    try:
        assert candidate_rows(db, "precision", keep) == []
        assert build(config, db, "precision", "sft") is None
    finally:
        with transaction(db):
            db.execute("UPDATE packages SET split = 'train'")
    assert versions(db, "precision") == []


def test_per_task_cap_and_deduplication(home):
    config, db = home
    build(config, db, "scope", "dpo")
    for stage in ("scope", "code"):
        for kind in ("sft", "dpo"):
            rows = rows_of(db, stage, kind, 99)
            tasks = [r.task for r in rows]
            assert max((tasks.count(t) for t in set(tasks)), default=0) <= 2
    assert build(config, db, "code", "sft") is None  # nothing new: no new version
    keys = db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM dataset_rows").fetchone()
    assert keys[0] == keys[1]


def test_versions_accumulate_and_runs_mix_in_replay(home):
    config, db = home
    first = build(config, db, "task_analysis", "sft") or versions(db, "task_analysis")[0]
    before = rows_of(db, "task_analysis", "sft", first.version)
    list(run_campaign(config, db, "demo", commits=3, samples=2))  # one more commit
    second = build(config, db, "task_analysis", "sft")
    assert second.version == first.version + 1
    after = rows_of(db, "task_analysis", "sft", second.version)
    assert [r.task for r in after[: len(before)]] == [r.task for r in before]
    assert second.rows == len(after) == len(before) + second.new_rows
    mix = training_mix(db, "task_analysis", "sft", second, replay=0.2)
    assert mix[: second.new_rows] == after[len(before) :]
    replayed = mix[second.new_rows :]
    assert all(r in before for r in replayed)
    assert len(replayed) == min(len(before), round(second.new_rows * 0.2 / 0.8))


def test_replay_share_is_what_was_asked(tmp_path):
    # The arithmetic of the mix on a larger dataset than a test campaign makes.
    from appliance.datasets.versions import DatasetVersion

    class Rows:
        def __init__(self, rows):
            self.rows = rows

        def execute(self, sql, args):
            return self

        def fetchall(self):
            return self.rows

    rows = [(json.dumps(_sft_row(f"demo@{i}").to_dict()), 1 if i < 200 else 2) for i in range(300)]
    version = DatasetVersion("scope", "sft", 2, 300, 100, "ok", {}, [], "", "", "")
    for replay in (0.1, 0.15, 0.2):
        mix = training_mix(Rows(rows), "scope", "sft", version, replay=replay)
        share = sum(1 for r in mix if int(r.task.split("@")[1]) < 200) / len(mix)
        assert abs(share - replay) < 0.01


def test_a_dataset_failing_its_gates_is_kept_marked_and_refused(home, tmp_path, monkeypatch):
    config, db = home
    # Rows whose answers are SmolLM2's raw outputs at 48 tokens: most stop at the limit.
    calls = db.execute(
        "SELECT id, messages, prompt, output, finish_reason FROM model_calls LIMIT 12"
    ).fetchall()
    raw = [
        _sft_row(f"demo@call{i}", source="raw output", messages=json.loads(m), prompt=p,
                 completion=o, finish_reason=f)
        for i, m, p, o, f in calls
    ]  # fmt: skip
    assert sum(r.finish_reason == "length" for r in raw) / len(raw) >= 0.1
    # The rows' one source, in place of the campaign and the data packages.
    monkeypatch.setattr("appliance.datasets.sources.SOURCES", (lambda db, stage, trainable: raw,))
    defaults = tmp_path / "forge.toml"
    defaults.write_text("")  # the default limits
    monkeypatch.setenv("FORGE_CONFIG", str(defaults))
    version = build(load_config(), db, "precision", "sft")
    assert version.status == "failed"
    assert any("token limit rate" in reason for reason in version.reasons)
    assert version.name in {v.name for v in versions(db, "precision")}  # kept, marked
    with pytest.raises(DatasetRefused, match="failed its quality gates"):
        training_mix(db, "precision", "sft", version, replay=0.15)


def test_gates_measure_each_problem():
    good = '{"files": ["a.py"]}'
    rows = [
        _sft_row("t@1", completion=good),
        _sft_row("t@2", completion=good, finish_reason="length"),
        _sft_row("t@3", completion='{"files": []}'),
        _sft_row("t@4", completion="not json"),
        _sft_row("t@5", completion='{"summary": "' + "again and again " * 10 + '"}'),
    ]
    rates = gates.measure(rows)
    assert rates == {"token_limit": 0.2, "runaway": 0.2, "invalid_json": 0.2, "empty": 0.2}
    reasons = gates.check(rates, {"token_limit": 0.1, "runaway": 0.5, "invalid_json": 0.3,
                                  "empty": 0.2})  # fmt: skip
    assert len(reasons) == 2 and "token limit rate 20.0%" in reasons[0]


def test_pairing_never_crosses_tasks_and_prefers_resolved_answers():
    calls = {
        i: ModelCall("chat", "coder", "b", "b", None, f"p{i}", {}, [], f'{{"o": {i}}}', "stop",
                     id=i)
        for i in range(1, 5)
    }  # fmt: skip
    samples = [_Attempt(0, "resolved", 1, 1.0), _Attempt(1, "failed", 2, 0.0)]
    rows = _task_rows("code", "demo@abc", samples, calls, real='{"o": "real"}')
    sft = [r for r in rows if r.kind == "sft"]
    dpo = [r for r in rows if r.kind == "dpo"]
    assert [r.source for r in sft] == ["resolved sample", "real commit"]
    assert len(dpo) == 1 and dpo[0].chosen == '{"o": 1}' and dpo[0].rejected == '{"o": 2}'
    assert dpo[0].prompt == "p2" and {r.task for r in rows} == {"demo@abc"}
    misaligned = [_Attempt(0, "failed", 3, 1.0), _Attempt(1, "not_applied", 4, 0.0)]
    rows = _task_rows("code", "demo@def", misaligned, calls, real=None)
    assert [(r.source, r.chosen) for r in rows] == [("better aligned sample", '{"o": 3}')]


def test_a_row_goes_to_its_stored_shape_and_back_unchanged():
    # The stored shape's keys, in the order dataset_rows.row has always held them.
    sft = _sft_row("demo@abc")
    assert list(sft.to_dict()) == ["stage", "kind", "task", "source", "messages", "prompt",
                                   "finish_reason", "completion", "provenance"]  # fmt: skip
    dpo = DatasetRow("code", "dpo", "demo@abc", "real commit over sample", [], "p", "stop",
                     sft.provenance, chosen="a", rejected="b")  # fmt: skip
    assert list(dpo.to_dict())[-3:] == ["chosen", "rejected", "provenance"]
    # `origin` came last (rows stored before it have none: they are the campaign's).
    assert list(sft.to_dict()["provenance"]) == ["task", "sample", "call_id", "base_sha256",
                                                 "adapter", "forge_revision", "params",
                                                 "origin"]  # fmt: skip
    for row in (sft, dpo):
        assert DatasetRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    older = sft.to_dict()
    del older["provenance"]["origin"]
    assert DatasetRow.from_dict(older).provenance.origin == "campaign"


def _sft_row(task: str, **fields) -> DatasetRow:
    given = {
        "source": "real commit",
        "messages": [{"role": "user", "content": "q"}],
        "prompt": "q",
        "finish_reason": "stop",
        "completion": '{"files": ["a.py"]}',
    }
    provenance = Provenance(task, 0, 1, "b", None, "r", {})
    return DatasetRow("scope", "sft", task, provenance=provenance, **(given | fields))


def test_export_and_cli(home, tmp_path):
    from click.testing import CliRunner

    from appliance.cli import cli

    config, db = home
    out = tmp_path / "code.jsonl"
    count = export(config, db, "code", "sft", None, out)
    lines = out.read_text().splitlines()
    assert count == len(lines) > 0 and json.loads(lines[0])["stage"] == "code"
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    result = runner.invoke(cli, ["datasets", "list", "--json"])
    assert result.exit_code == 0, result.output
    names = {v["name"] for v in json.loads(result.output)}
    assert "code-sft-v1" in names
    result = runner.invoke(cli, ["datasets", "show", "code", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["stage"] == "code"
    result = runner.invoke(cli, ["datasets", "show", "poetry"])
    assert result.exit_code == 2 and "unknown stage 'poetry'" in result.output
