"""Dataset versions against the time-cut hold-out, on the real demo package: rows are made
by the real candidate-row code from triples, logged calls and synthetic pairs written
through the campaign store and the call log (no model runs). Raising the hold-out drops
the rows now held out; the leak check counts evaluation tasks a version holds rows of."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance.campaign import store as campaign_store
from appliance.campaign.store import StageRecord, SyntheticPair, Triple
from appliance.cli import cli
from appliance.config import load_config
from appliance.datasets.versions import (
    LEAKED_SHOWN,
    build,
    export,
    leak_check,
    rows_of,
    training_mix,
    versions,
)
from appliance.packages import corpus
from appliance.packages.split import Holdout, history
from appliance.serving.calllog import CallLog, ModelCall
from appliance.store import transaction
from tests.harness.conftest import DEMO, ingest_package, make_home

SETTINGS = "[evaluation]\nholdout_fraction = {fraction}\n"


@pytest.fixture
def home(tmp_path, monkeypatch):
    config, db = make_home(tmp_path / "home", monkeypatch, SETTINGS.format(fraction=0.2))
    ingest_package(config, db, DEMO)
    yield config, db
    db.close()


def _with_fraction(config, fraction: float):
    (config.home / "forge.toml").write_text(
        "[ingest]\nquiet_seconds = 0\n" + SETTINGS.format(fraction=fraction)
    )
    return load_config()


def _campaign_data(config, db, shas: list[str]) -> None:
    """One failed `code` sample per commit, its logged call, and the real commit's answer:
    what a campaign records, so that each commit gives an SFT and a DPO row."""
    (package,) = corpus.packages(db)
    log = CallLog(config.db_path)
    for sha in shas:
        call = ModelCall("chat", "coder", "base", "0" * 64, None, f"prompt for {sha}",
                         {"temperature": 0.7}, [{"role": "user", "content": sha}],
                         '{"edits": []}', "stop")  # fmt: skip
        stage = StageRecord("code", {"edits": []}, log(call), None, None, {})
        triple = Triple(package.id, sha, 0, "parent", 0.7, 1, (stage,), (), "", "failed", "",
                        {}, {}, {})  # fmt: skip
        assert campaign_store.record_triple(db, triple)
        target = {"edits": [{"path": "a.py", "search": "x", "replace": sha}]}
        campaign_store.record_pairs(db, [SyntheticPair(package.id, sha, "code", {}, target)])


def test_raising_the_holdout_fraction_drops_the_rows_now_held_out(home):
    config, db = home
    before = Holdout.of(config, db)
    oldest_first = history(db, "demo")
    trainable = [s for s in oldest_first if not before.held_out("demo", s)]
    assert len(trainable) == 28
    # Campaign data for every commit, held out or not: only trainable ones give rows.
    _campaign_data(config, db, oldest_first)
    first = build(config, db, "code", "sft")
    assert first.version == 1 and first.dropped_rows == 0
    assert first.holdout == before.to_dict()
    assert {r.task for r in rows_of(db, "code", "sft", 1)} == {f"demo@{s}" for s in trainable}
    assert build(config, db, "code", "sft") is None  # nothing new, nothing dropped

    raised = _with_fraction(config, 0.5)
    after = Holdout.of(raised, db)
    now_held = {f"demo@{s}" for s in trainable if after.held_out("demo", s)}
    assert len(now_held) == 28 - 17  # ceil(0.5 × 35) = 18 held out now
    second = build(raised, db, "code", "sft")
    assert (second.version, second.new_rows, second.dropped_rows) == (2, 0, 11)
    assert second.holdout == after.to_dict() and second.holdout != first.holdout
    kept = rows_of(db, "code", "sft", 2)
    assert second.rows == len(kept) == 17
    assert not {r.task for r in kept} & now_held
    assert {r.task for r in rows_of(db, "code", "sft", 1)} >= now_held  # v1 is history
    lines = (config.home / second.path).read_text().splitlines()
    assert sorted(json.loads(line)["task"] for line in lines) == sorted(r.task for r in kept)
    assert export(raised, db, "code", "sft", 2, config.home / "out.jsonl") == 17
    assert not {r.task for r in training_mix(db, "code", "sft", second, replay=0.2)} & now_held
    assert build(raised, db, "code", "sft") is None
    assert [v.dropped_rows for v in versions(db, "code")] == [0, 11]
    shown = CliRunner().invoke(cli, ["datasets", "list"])
    assert shown.exit_code == 0 and "(0 new, 11 dropped: held out now)" in shown.output
    assert "dropped" not in shown.output.splitlines()[0]  # v1 dropped nothing


def test_a_package_moved_to_eval_drops_every_row(home):
    config, db = home
    holdout = Holdout.of(config, db)
    trainable = [s for s in history(db, "demo") if not holdout.held_out("demo", s)]
    _campaign_data(config, db, trainable[:3])
    assert build(config, db, "code", "dpo").rows == 3
    with transaction(db) as conn:
        corpus.set_name_split(conn, "demo", "eval")
    dropped = build(config, db, "code", "dpo")
    assert (dropped.rows, dropped.dropped_rows, dropped.new_rows) == (0, 3, 0)
    assert rows_of(db, "code", "dpo", dropped.version) == []
    assert dropped.holdout["packages"] == {}  # no train package left to hold commits of


def test_the_leak_check_counts_evaluation_tasks_a_version_holds(home):
    config, db = home
    oldest_first = history(db, "demo")
    _campaign_data(config, db, oldest_first)
    build(config, db, "code", "sft")
    build(config, db, "code", "dpo")
    everything = [f"demo@{s}" for s in oldest_first]
    evaluation = [f"demo@{s}" for s in oldest_first if Holdout.of(config, db).held_out("demo", s)]

    clean = leak_check(db, "code-sft-v1", evaluation)
    assert (clean.dataset, clean.tasks, clean.leaks, clean.leaked) == ("code-sft-v1", 7, 0, ())
    leaky = leak_check(db, "code-sft-v1", everything + everything[:3])  # duplicates once
    assert (leaky.tasks, leaky.leaks) == (35, 28) and leaky.known
    assert len(leaky.leaked) == LEAKED_SHOWN and set(leaky.leaked) <= set(everything[:28])
    assert leak_check(db, "code-dpo-v1", everything).leaks == 28
    assert leak_check(db, "code-sft-v1", ["other@abc"]).leaks == 0
    base = leak_check(db, None, everything)
    assert (base.dataset, base.tasks, base.leaks, base.known) == (None, 35, 0, True)
    unknown = leak_check(db, "code-sft-v9", everything)
    assert not unknown.known and unknown.leaks == 0
    assert not leak_check(db, "test", everything).known

    # Rows dropped by a later version are no leak of that version, still one of the first.
    raised = _with_fraction(config, 0.5)
    build(raised, db, "code", "sft")
    wider = [f"demo@{s}" for s in oldest_first if Holdout.of(raised, db).held_out("demo", s)]
    assert leak_check(db, "code-sft-v2", wider).leaks == 0
    assert leak_check(db, "code-sft-v1", wider).leaks == 11
