"""`forge cycle` end to end with the real SmolLM2, the real sandbox and real training,
bounded: one commit, one sample, the scope stage, two optimizer steps."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance import registry
from appliance.cli import cli
from appliance.cycle.profile import with_profile
from tests.harness.conftest import make_home

SETTINGS = """
[harness]
gold_runs = 1
[campaign]
samples = 1
max_tokens = 64
context_tokens = 384
[training]
max_steps = 2
max_seq_len = 512
threads = 1
[evaluation]
max_examples = 2
max_tokens = 64
min_tasks = 1  # two tasks: the loop's machinery, not the evidence, is under test here
[cycle]
stages = ["scope"]
min_new_rows = 1
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory, training_base):
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield make_home(tmp_path_factory.mktemp("cycle") / "home", monkeypatch, SETTINGS)


def cycle(config, *args):
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["cycle", "--demo", "--commits", "1", "--json", *args])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_a_cycle_runs_the_whole_loop_and_decides_the_candidate(home):
    config, db = home
    report = cycle(config)
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["ingest", "campaign", "datasets", "train", "evaluate"]
    assert report["ok"] and all(s["status"] == "ok" for s in steps.values()), report
    assert steps["ingest"]["detail"]["accepted"] == 1
    assert steps["campaign"]["detail"]["units"] == 1
    made = steps["datasets"]["detail"]["versions"]
    assert [v["name"] for v in made if v["kind"] == "sft"] == ["scope-sft-v1"]
    # DPO versions are built too; too few pairs (cycle.min_dpo_pairs 8) to train DPO on.
    assert {v["name"] for v in made if v["kind"] == "dpo"} <= {"scope-dpo-v1"}
    (trained,) = steps["train"]["detail"]["trained"]
    assert trained["adapter"] == "scope-v1" and trained["steps"] == 2
    (decision,) = report["decisions"]
    assert decision["candidate"] == "scope-v1" and decision["baseline"] == "base"
    assert decision["verdict"] in ("promote", "reject") and decision["metrics"]
    assert decision["unit"] == "task" and decision["leak_check"]["leaks"] == 0
    assert set(decision["best_baselines"]) == {m["metric"] for m in decision["metrics"]}
    assert "held-out commits" in decision["note"]  # one package: its held-out commits
    # The registry did what the gate said, and the event names the decision.
    active = registry.active(db, "scope")
    if decision["action"] == "promoted":
        assert active is not None and active.name == "scope-v1"
    else:
        assert active is None and registry.get(db, "scope", 1).status == "rejected"
    (event,) = registry.history(db, "scope")
    assert event.decision_id == decision["decision_id"]
    saved = json.loads((config.home / report["report"]).read_text())
    assert saved["decisions"][0]["decision_id"] == decision["decision_id"]


def test_the_next_cycle_goes_on_with_the_next_commit_and_doubles_nothing(home):
    config, db = home
    before = {r[0] for r in db.execute("SELECT sha FROM triples")}
    first_active = registry.active(db, "scope")
    report = cycle(config)
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["ingest"]["detail"].get("duplicate") == 1
    assert steps["campaign"]["detail"]["units"] == 1
    shas = [r[0] for r in db.execute("SELECT sha FROM triples")]
    assert len(shas) == len(set(shas)) == 2 and before < set(shas)  # the next commit, once
    (version,) = [v for v in steps["datasets"]["detail"]["versions"] if v["kind"] == "sft"]
    assert version["name"] == "scope-sft-v2" and version["rows"] > version["new_rows"]
    (trained,) = steps["train"]["detail"]["trained"]
    assert trained["adapter"] == "scope-v2" and trained["dataset"] == "scope-sft-v2"
    (decision,) = report["decisions"]
    assert decision["candidate"] == "scope-v2"
    assert decision["baseline"] == (first_active.name if first_active else "base")
    assert [v.adapter.name for v in registry.versions(db, "scope")] == ["scope-v1", "scope-v2"]


def test_the_demo_profile_yields_to_forge_toml(home):
    config, _ = home
    demo = with_profile(config)
    assert demo.settings.campaign.samples == 1  # forge.toml's
    assert demo.settings.cycle.commits == 4  # the profile's
    assert demo.settings.training.grad_accum == 1
    assert demo.settings.cycle.dpo_stages == ["task_analysis"]  # DPO where time allows
    assert demo.settings.cycle.dpo_max_steps == 3
