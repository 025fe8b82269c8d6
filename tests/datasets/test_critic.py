"""The calibrated critic on a real campaign of the demo: SmolLM2 (llama.cpp) judges pairs
of answers, its agreement with the harness is measured with a Wilson interval, and its
labels reach a DPO dataset only when that interval's lower bound clears the threshold."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from statsmodels.stats.proportion import proportion_confint

from appliance.campaign.run import run_campaign
from appliance.cli import cli
from appliance.datasets import critic
from appliance.datasets.rows import HARNESS_DECIDED, undecided_pairs
from appliance.datasets.versions import rows_of, versions
from appliance.packages.split import Holdout
from tests.harness.conftest import demo_home_with

STAGE = "task_analysis"  # its samples share one prompt: undecided pairs exist
SETTINGS = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 48
context_tokens = 384
[datasets]
per_task_cap = 20
critic_min_score = 0.5001
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with demo_home_with(tmp_path_factory, "critic", SETTINGS) as (config, db):
        list(run_campaign(config, db, "demo", commits=1, samples=3))
        yield config, db


def _forge(config, *args: str):
    runner = CliRunner(env={"FORGE_HOME": str(config.home), "FORGE_CONFIG": None})
    return runner.invoke(cli, list(args))


def _set_threshold(config, value: float) -> None:
    toml = config.home / "forge.toml"
    text = toml.read_text().replace("[datasets]\n", "[datasets]\n#\n", 1)
    lines = [line for line in text.splitlines() if not line.startswith("min_critic_agreement")]
    at = lines.index("#")
    lines[at] = f"min_critic_agreement = {value}"
    toml.write_text("\n".join(lines) + "\n")


def test_the_ensemble_penalises_disagreement_and_cancels_position():
    agree = critic.ensemble([0.8, 0.8], lam=1.0, min_score=0.6)
    assert agree.label == "first" and math.isclose(agree.score_first, 0.8)
    split = critic.ensemble([0.95, 0.35], lam=1.0, min_score=0.6)
    assert math.isclose(split.score_first, 0.65 - 0.09) and split.label is None
    assert critic.ensemble([0.95, 0.35], lam=0.0, min_score=0.6).label == "first"
    assert critic.ensemble([0.1], lam=1.0, min_score=0.6).label == "second"
    # A judge that always says "A" gives each answer 0.5 over the two orders.
    always_a = {"A": -0.1, "B": -3.0}
    assert math.isclose((critic._p(always_a, "A") + critic._p(always_a, "B")) / 2, 0.5)


def test_calibration_measures_agreement_with_the_harness(home):
    config, db = home
    trainable = Holdout.of(config, db).trainable
    known = critic.known_pairs(db, STAGE, trainable)
    undecided = undecided_pairs(db, STAGE, trainable)
    assert known and undecided, "the demo campaign gives both kinds of pair"
    assert all(p.first != p.second for p in known)
    before = db.execute("SELECT COUNT(*) FROM model_calls WHERE kind = 'judge'").fetchone()[0]
    out = _forge(config, "datasets", "critic", STAGE, "--max-pairs", "4", "--json")
    assert out.exit_code == 0, out.output
    (c,) = json.loads(out.stdout)["calibrations"]
    assert len(c["judges"]) == 1 and c["pairs"] == min(4, len(known)) - c["skipped"]
    low, high = proportion_confint(c["agreed"], c["pairs"], alpha=0.05, method="wilson")
    assert math.isclose(c["low"], low, abs_tol=1e-12) and math.isclose(c["high"], high)
    judged = c["pairs"] + c["undecided"]
    # Each pair is asked in both orders of one judge, logged as the critic's calls.
    calls = db.execute(
        "SELECT COUNT(*), MIN(source), MAX(source) FROM model_calls WHERE kind = 'judge'"
    ).fetchone()
    assert calls[0] - before == 2 * judged and calls[1] == calls[2] == "critic"
    stored = critic.latest(db, STAGE)
    assert stored.agreed == c["agreed"] and stored.undecided == min(4, len(undecided))
    details = json.loads(
        db.execute("SELECT details FROM critic_calibrations WHERE id = ?", [stored.id]).fetchone()[
            0
        ]
    )
    assert sum(d["agrees"] for d in details) == c["agreed"]
    assert all(d["agrees"] == (sum(d["p_first"]) / len(d["p_first"]) > 0.5) for d in details)
    human = _forge(config, "datasets", "critic", STAGE, "--max-pairs", "1")
    assert human.exit_code == 0 and "agrees with the harness on" in human.output


def _critic_rows(db):
    return [
        r
        for v in versions(db, STAGE)
        if v.kind == "dpo"
        for r in rows_of(db, STAGE, "dpo", v.version)
        if r.provenance.origin == "critic"
    ]


def test_the_real_critics_labels_are_used_only_if_it_agreed_at_all(home):
    config, db = home
    c = critic.latest(db, STAGE) or pytest.fail("calibrated in the test before")
    print("calibration", c.to_dict())
    _set_threshold(config, 0.0)  # the lowest there is: still needs a lower bound above it
    assert _forge(config, "datasets", "build", STAGE).exit_code == 0
    assert c.usable(0.0) == (c.agreed > 0)
    assert bool(_critic_rows(db)) == (c.usable(0.0) and c.labelled > 0)


def test_labels_enter_a_dpo_dataset_only_above_the_agreement_threshold(home):
    """A calibration stored as a critic that agreed with the harness on 19 of 20 pairs
    would (its judge is not SmolLM2, which agrees far less), with labels on the real
    undecided pairs: the threshold decides."""
    config, db = home
    trainable = Holdout.of(config, db).trainable
    pairs = undecided_pairs(db, STAGE, trainable)
    labels = [(p, critic.ensemble([0.9 if i % 2 else 0.1], 1.0, 0.6)) for i, p in enumerate(pairs)]
    low, high = critic.wilson(19, 20)
    stored = critic._store(db, STAGE, ["judge"], 1.0, 0.6, 20, 19, low, high, 0, labels, [])
    assert stored.labelled == len(pairs) and round(low, 2) == 0.76
    _set_threshold(config, 0.8)
    assert _forge(config, "datasets", "build", STAGE).exit_code == 0
    assert [
        r for r in _critic_rows(db) if r.provenance.params["critic_calibration"] == stored.id
    ] == []
    harness_rows = [
        r for v in versions(db, STAGE) if v.kind == "dpo"
        for r in rows_of(db, STAGE, "dpo", v.version) if r.provenance.origin != "critic"
    ]  # fmt: skip
    assert {r.source for r in harness_rows} <= set(HARNESS_DECIDED) | {"better aligned sample"}
    _set_threshold(config, 0.7)
    built = _forge(config, "datasets", "build", STAGE, "--json")
    assert built.exit_code == 0, built.output
    rows = [r for r in _critic_rows(db) if r.provenance.params["critic_calibration"] == stored.id]
    expected = {
        (p.first.output, p.second.output)
        if v.label == "first"
        else (p.second.output, p.first.output)
        for p, v in labels
    }
    assert {(r.chosen, r.rejected) for r in rows} == expected and len(rows) == len(pairs)
    assert all(r.source == critic.SOURCE and r.provenance.origin == "critic" for r in rows)
    assert all(r.prompt == pairs[0].prompt for r in rows)  # the prompt both answered
    sources = json.loads(_forge(config, "datasets", "sources", "--json").stdout)
    assert "critic" in json.dumps(sources)
