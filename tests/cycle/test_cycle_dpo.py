"""DPO in `forge cycle`, on the real SmolLM2, the real trainer, a real SQLite home: the
scope stage's SFT candidate, DPO trained on top of it (it is the reference), the run
killed and resumed, both candidates judged against the version in service, at most one
promoted, and the report showing them side by side. Bounded: one commit, one sample, two
evaluation tasks, two SFT steps and three DPO steps."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance import registry
from appliance.campaign.run import run_campaign
from appliance.cli import cli
from appliance.cli.evaluation import _print_cycle_dict
from appliance.cli.output import console
from appliance.cycle.loop import _choose, run_cycle
from appliance.datasets.versions import latest
from appliance.evaluation.compare import evaluate_many
from appliance.evaluation.store import decisions as stored_decisions
from tests.harness.conftest import DEMO, ingest_package, make_home

ROOT = Path(__file__).resolve().parents[2]
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
checkpoint_every = 1
threads = 1
[evaluation]
max_examples = 2
max_tokens = 64
min_tasks = 1  # two tasks: the loop's machinery, not the evidence, is under test here
[cycle]
stages = ["scope"]
min_new_rows = 1
min_dpo_pairs = 1
dpo_max_steps = 3
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory, training_base):
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp("cycle-dpo") / "home", monkeypatch,
                               SETTINGS)  # fmt: skip
        ingest_package(config, db, DEMO)
        list(run_campaign(config, db, "demo", commits=1, samples=1))
        yield config, db


def with_cycle(config, **changes):
    cycle = config.settings.cycle.model_copy(update=changes)
    return dataclasses.replace(config, settings=config.settings.model_copy(update={"cycle": cycle}))


def steps_of(report) -> dict:
    return {s.name: s for s in report.steps}


def test_dpo_waits_for_enough_pairs_and_a_version_that_passed_its_gates(home):
    config, db = home
    report = run_cycle(with_cycle(config, min_dpo_pairs=1000), db, only=("datasets", "train"))
    steps = steps_of(report)
    made = {v["name"]: v for v in steps["datasets"].detail["versions"]}
    assert set(made) == {"scope-sft-v1", "scope-dpo-v1"}, made
    assert made["scope-dpo-v1"]["kind"] == "dpo" and made["scope-dpo-v1"]["status"] == "ok"
    pairs = made["scope-dpo-v1"]["rows"]
    assert pairs >= 1
    (trained,) = steps["train"].detail["trained"]
    assert trained["adapter"] == "scope-v1" and trained["kind"] == "sft"
    (skipped,) = steps["train"].detail["not_trained"]
    why = f"scope-dpo-v1 has {pairs} pairs (< cycle.min_dpo_pairs 1000)"
    assert skipped == {"stage": "scope", "kind": "dpo", "why": why}

    # A DPO version that failed its quality gates is not trained on, and the reason says so.
    reasons = json.dumps(["empty answers 0.5"])
    db.execute("UPDATE dataset_versions SET status = 'failed', reasons = ? "
               "WHERE stage = 'scope' AND kind = 'dpo'", [reasons])  # fmt: skip
    db.conn.commit()
    try:
        report = run_cycle(config, db, only=("train",))
    finally:
        db.execute("UPDATE dataset_versions SET status = 'ok', reasons = '[]' "
                   "WHERE stage = 'scope' AND kind = 'dpo'")  # fmt: skip
        db.conn.commit()
    detail = steps_of(report)["train"].detail
    assert detail["trained"] == []
    assert {"stage": "scope", "kind": "sft", "why": "scope-sft-v1 already trained"} in (
        detail["not_trained"]
    )
    assert {"stage": "scope", "kind": "dpo",
            "why": "scope-dpo-v1 failed its quality gates: empty answers 0.5"} in (
        detail["not_trained"]
    )  # fmt: skip
    # Nor for a stage left out of cycle.dpo_stages.
    report = run_cycle(with_cycle(config, dpo_stages=["code"]), db, only=("train",))
    assert {"stage": "scope", "kind": "dpo", "why": "not in cycle.dpo_stages (code)"} in (
        steps_of(report)["train"].detail["not_trained"]
    )
    assert [a.name for a in registry.adapters(db, "scope")] == ["scope-v1"]


def test_forge_train_on_refuses_what_it_cannot_build_on(home):
    config, _ = home
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    out = runner.invoke(cli, ["train", "scope", "--on", "v1"])
    assert out.exit_code == 2 and "only DPO is trained on top of an SFT version" in out.output
    out = runner.invoke(cli, ["train", "scope", "--dpo", "--on", "v7"])
    assert out.exit_code == 2 and "scope has no version v7" in out.output
    out = runner.invoke(cli, ["train", "scope", "--dpo", "--on", "seven"])
    assert out.exit_code == 2 and "is not a version of scope" in out.output


KILL_DURING_DPO = """
import sys
from appliance.config import load_config
from appliance.cycle.loop import run_cycle
from appliance.store import open_db
config = load_config()
run_cycle(config, open_db(config), only=("datasets", "train"))
"""


def test_a_cycle_killed_during_dpo_resumes_it_on_top_of_the_sft_candidate(home):
    config, db = home
    sft = registry.get(db, "scope", 1)
    run_dir = config.home / "runs" / "train" / f"scope-dpo-v1-on-scope-v1-{sft.base_sha256[:12]}"
    env = os.environ | {"FORGE_HOME": str(config.home)}
    env.pop("FORGE_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-c", KILL_DURING_DPO], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((run_dir / "trainer").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # the cycle, and with it its training child
    proc.wait()
    assert [a.name for a in registry.adapters(db, "scope")] == ["scope-v1"]

    report = run_cycle(config, db, only=("datasets", "train"))
    detail = steps_of(report)["train"].detail
    assert {"stage": "scope", "kind": "sft", "why": "scope-sft-v1 already trained"} in (
        detail["not_trained"]
    )  # the SFT part is not trained again
    (trained,) = detail["trained"]
    assert trained == {"stage": "scope", "kind": "dpo", "adapter": "scope-v2",
                       "dataset": "scope-dpo-v1", "steps": 3,
                       "final_loss": trained["final_loss"], "built_on": "scope-v1"}  # fmt: skip
    dpo = registry.get(db, "scope", 2)
    assert dpo.kind == "dpo" and dpo.status == "candidate"
    assert dpo.metrics["reference"] == "scope-v1"
    assert dpo.metrics["built_on_dataset"] == "scope-sft-v1"
    assert 1 <= dpo.metrics["resumed_from"] < 3  # from the killed run's checkpoint
    assert dpo.metrics["run_dir"] == str(run_dir.relative_to(config.home))
    assert (config.home / dpo.path).is_file()
    # The policy started as the SFT adapter and the reference is that same adapter: the
    # first DPO loss is log 2 (against the base as reference it would not be).
    first = next(json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                 if '"step": 1,' in line)  # fmt: skip
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)
    # Run again: nothing is trained twice.
    detail = steps_of(run_cycle(config, db, only=("datasets", "train"))).get("train").detail
    assert detail["trained"] == []
    assert {"stage": "scope", "kind": "dpo", "why": "scope-v2 is already DPO on scope-v1"} in (
        detail["not_trained"]
    )


def test_the_gate_decides_between_the_sft_and_dpo_candidates(home):
    config, db = home
    report = run_cycle(config, db, only=("evaluate",))
    assert report.ok, report
    decided = {d["candidate"]: d for d in report.decisions}
    assert set(decided) == {"scope-v1", "scope-v2"}
    for d in decided.values():
        assert d["baseline"] == "base" and d["unit"] == "task" and d["metrics"]
        assert d["leak_check"]["leaks"] == 0
    assert decided["scope-v1"]["kind"] == "sft" and decided["scope-v2"]["kind"] == "dpo"
    assert decided["scope-v2"]["built_on"] == "scope-v1"
    assert decided["scope-v2"]["dataset"] == "scope-dpo-v1" and decided["scope-v2"]["steps"] == 3
    # Both on the same tasks.
    tasks = {c: {m["n"] for m in d["metrics"]} for c, d in decided.items()}
    assert tasks["scope-v1"] == tasks["scope-v2"]
    promoted = [c for c, d in decided.items() if d["action"] == "promoted"]
    assert len(promoted) <= 1
    active = registry.active(db, "scope")
    assert (active.name if active else None) == (promoted[0] if promoted else None)
    for name, d in decided.items():
        status = registry.get(db, "scope", int(name[-1])).status
        expected = {"promoted": "active", "rejected": "rejected"}.get(d["action"], "candidate")
        assert status == expected, (name, d["action"], d["verdict"], d["why"])
    saved = json.loads((config.home / report.path).read_text())
    assert {d["kind"] for d in saved["decisions"]} == {"sft", "dpo"}
    # The report shows them side by side.
    with console.capture() as shown:
        _print_cycle_dict(report.to_dict())
    text = shown.get()
    assert "scope candidates vs base" in text
    sft_line = next(line for line in text.splitlines() if "scope-v1 " in line and "sft" in line)
    dpo_line = next(line for line in text.splitlines() if "scope-v2 " in line and "dpo" in line)
    assert "scope-sft-v1" in sft_line and decided["scope-v1"]["verdict"] in sft_line
    assert "scope-dpo-v1" in dpo_line and decided["scope-v2"]["verdict"] in dpo_line


def forced(evaluation, verdict):
    return dataclasses.replace(
        evaluation, decision=dataclasses.replace(evaluation.decision, verdict=verdict)
    )


def test_when_the_gate_passes_both_at_most_one_is_promoted(home):
    """_choose with the real evaluations of both candidates, their verdicts set: the gate's
    own comparison of the two decides, and the loser is rejected on that decision."""
    config, db = home
    for version in (1, 2):  # as the cycle left them; decided again here on their stored runs
        if registry.get(db, "scope", version).status != "candidate":
            db.execute("UPDATE adapters SET status = 'candidate' WHERE stage = 'scope' "
                       "AND version = ?", [version])  # fmt: skip
    db.conn.commit()
    sft_ev, dpo_ev = evaluate_many(config, db, [("scope", 1), ("scope", 2)])
    assert all(r.reused for ev in (sft_ev, dpo_ev) for r in ev.runs)  # no model ran again
    sft, dpo = registry.get(db, "scope", 1), registry.get(db, "scope", 2)

    chosen = _choose(
        config, db, [(sft, forced(sft_ev, "promote")), (dpo, forced(dpo_ev, "promote"))]
    )
    actions = {v.name: (action, why) for v, _, action, why in chosen}
    assert sorted(a for a, _ in actions.values()) == ["promoted", "rejected"]
    versus = actions["scope-v1"][1]["versus"]
    assert versus["candidate"] == "scope-v2" and versus["baseline"] == "scope-v1"
    # Two tasks cannot show DPO better than SFT: the one it was built on is preferred.
    assert versus["verdict"] != "promote" and versus["winner"] == "scope-v1"
    assert actions["scope-v1"][0] == "promoted" and actions["scope-v2"][0] == "rejected"
    assert "scope-v1 was chosen" in actions["scope-v2"][1]["note"]
    (recorded,) = [d for d in stored_decisions(db, "scope") if d.id == versus["decision_id"]]
    assert recorded.candidate == "scope-v2" and recorded.baseline == "scope-v1"

    chosen = _choose(
        config, db, [(sft, forced(sft_ev, "reject")), (dpo, forced(dpo_ev, "promote"))]
    )
    assert [(v.name, a) for v, _, a, _ in chosen] == [("scope-v1", "rejected"),
                                                       ("scope-v2", "promoted")]  # fmt: skip
    chosen = _choose(config, db, [(sft, forced(sft_ev, "insufficient")),
                                  (dpo, forced(dpo_ev, "insufficient"))])  # fmt: skip
    assert [a for _, _, a, _ in chosen] == ["kept", "kept"]
    assert latest(db, "scope", "dpo").name == "scope-dpo-v1"
