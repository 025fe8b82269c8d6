"""What a real demo commit says: changed files and symbols, its diff as edits that resolve
the task, and the synthetic pairs per stage."""

from __future__ import annotations

import pytest

from appliance.campaign import truth
from appliance.harness.grading import grade_patch
from appliance.harness.results import gold_for
from appliance.harness.spec import commit_specs

WHITESPACE = "Strip surrounding whitespace before parsing quantities"
ADDITION = "Add addition and subtraction of quantities"


def spec_for(demo_home, subject):
    config, db = demo_home
    return next(s for s in commit_specs(config, db, "demo") if s.message.startswith(subject))


def test_symbol_spans():
    source = (
        "import x\n\n@decorator\ndef f(a):\n    return a\n\n"
        "class C:\n    def m(self):\n        pass\n"
    )
    assert truth.symbol_spans(source) == [("f", 3, 5), ("C", 7, 9), ("C.m", 8, 9)]
    assert truth.symbol_spans("def broken(:\n") == []


@pytest.mark.parametrize("subject", [WHITESPACE, ADDITION])
def test_the_commits_own_edits_resolve_its_task(demo_home, subject):
    config, db = demo_home
    spec = spec_for(demo_home, subject)
    real = truth.commit_truth(spec)
    assert real.files and all(not p.startswith("tests/") for p in real.files)
    assert real.symbols and all(s.split("::")[0] in real.files for s in real.symbols)
    assert real.edits
    gold, _ = gold_for(config, db, spec)
    verdict = grade_patch(config, spec, gold, "search_replace", list(real.edits))
    assert verdict.verdict == "resolved", verdict.reason


def test_synthetic_pairs_label_every_stage(demo_home):
    spec = spec_for(demo_home, WHITESPACE)
    real = truth.commit_truth(spec)
    other = "src/metrica/units.py"
    candidates = [(real.files[0], "named"), (other, "imports or is imported by a candidate")]
    symbol_ids = [*real.symbols, f"{other}::Unit"]
    pairs = truth.synthetic_pairs(spec, real, candidates, symbol_ids, {real.files[0], other})
    assert set(pairs) == {"task_analysis", "scope", "precision", "plan", "code"}
    assert pairs["task_analysis"][1]["files"] == list(real.files)
    labels = {f["path"]: f["label"] for f in pairs["scope"][1]["files"]}
    assert labels == {real.files[0]: "relevant", other: "supporting"}
    symbols = {s["symbol"]: s["label"] for s in pairs["precision"][1]["symbols"]}
    assert {s for s, label in symbols.items() if label == "primary"} == set(real.symbols)
    assert symbols[f"{other}::Unit"] == "excluded"
    assert pairs["code"][1]["edits"][0]["path"] == real.files[0]


def test_alignment_measures_overlap_with_the_real_commit(demo_home):
    real = truth.commit_truth(spec_for(demo_home, WHITESPACE))
    plan = {"steps": [{"file": real.files[0]}, {"file": "README.md"}]}
    aligned = truth.alignment(real, plan, [real.files[0]], set(real.symbols))
    assert aligned["plan_files"]["recall"] == 1.0 and aligned["plan_files"]["precision"] == 0.5
    assert aligned["edit_symbols"]["recall"] == 1.0
    none = truth.alignment(real, None, [], set())
    assert none["plan_files"]["recall"] == 0.0 and none["plan_files"]["precision"] is None
