"""What a real demo commit says: changed files and symbols, its diff as edits that resolve
the task, and the synthetic pairs per stage."""

from __future__ import annotations

import pytest

from appliance.campaign import truth
from appliance.harness.grading import grade_patch
from appliance.harness.results import gold_for
from appliance.harness.spec import commit_specs
from appliance.stages import schemas

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
    # the candidates' order is kept (the caller makes it label-blind), and the commit's
    # facts stay with the input, so a target can be built for any list a prompt shows
    flipped = truth.synthetic_pairs(spec, real, candidates[::-1], symbol_ids, {*labels})
    assert [f["path"] for f in flipped["scope"][1]["files"]] == [other, real.files[0]]
    given = pairs["scope"][0]
    assert given["real_files"] == list(real.files) and given["supporting"] == [other]
    assert pairs["precision"][0]["real_symbols"] == list(real.symbols)
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


CONVERSIONS = "Reject conversions between incompatible dimensions"
FORMATTING = "Add a formatting module with fixed precision"


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        (WHITESPACE, "feature"),
        (CONVERSIONS, "bugfix"),
        (FORMATTING, "feature"),  # "fixed precision" is no fix
        ("Return NotImplemented when comparing quantities with other types", "bugfix"),  # body
        ("Handle negative values when humanizing quantities", "bugfix"),
        ("Extract the quantity pattern into module constants", "refactor"),
        ("Split unit lookup into name and prefix helpers", "refactor"),
    ],
)
def test_kind_of_a_demo_commit(demo_home, subject, kind):
    spec = spec_for(demo_home, subject)
    real = truth.commit_truth(spec)
    assert truth.infer_kind(spec.message, real.files, real.tests) == kind
    assert truth.synthetic_pairs(spec, real, [], [], set())["task_analysis"][1]["kind"] == kind


def test_kind_of_tests_or_docs_only():
    assert truth.infer_kind("Fix the flaky test", [], ["tests/test_a.py"]) == "tests"
    assert truth.infer_kind("Fix a typo", ["README.md", "docs/usage.html"], []) == "docs"
    assert truth.infer_kind("Fix a typo", ["README.md", "src/a.py"], []) == "bugfix"


def _valid(value, schema) -> bool:
    """The subset of JSON schema that appliance.stages.schemas uses (no jsonschema here)."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and all(k in value for k in schema.get("required", []))
            and all(_valid(v, props[k]) for k, v in value.items() if k in props)
        )
    if kind == "array":
        return (
            isinstance(value, list)
            and schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
            and all(_valid(v, schema["items"]) for v in value)
        )
    if kind == "integer":
        return isinstance(value, int) and schema.get("minimum", value) <= value <= schema.get(
            "maximum", value
        )
    if kind == "string" and not isinstance(value, str):
        return False
    return value in schema.get("enum", [value])


def test_the_plan_of_a_commit_follows_its_imports(demo_home):
    spec = spec_for(demo_home, CONVERSIONS)
    real = truth.commit_truth(spec)
    assert real.tests == ("tests/test_quantity.py",)
    plan = truth.synthetic_pairs(spec, real, [], [], set())["plan"][1]
    assert _valid(plan, schemas.plan())
    assert not _valid({**plan, "steps": []}, schemas.plan())  # the check can fail
    # units.py is imported by quantity.py, both by __init__.py: that order, those depends_on
    files = ["src/metrica/units.py", "src/metrica/quantity.py", "src/metrica/__init__.py"]
    assert [p["title"] for p in plan["parts"]] == [f"Change {f}" for f in files]
    assert [p["depends_on"] for p in plan["parts"]] == [[], [1], [1, 2]]
    steps = {s["action"]: s["part"] for s in plan["steps"]}
    assert steps["add DimensionError in src/metrica/units.py"] == 1  # new at the commit
    assert steps["change Quantity.to in src/metrica/quantity.py"] == 2
    assert plan["test_plan"] == ["run tests/test_quantity.py"]


def test_a_plan_keeps_to_the_schemas_caps(demo_home):
    spec = spec_for(demo_home, WHITESPACE)
    files = tuple(f"src/m{i}.py" for i in range(7))
    many = truth.CommitTruth(
        files,
        (),
        (),
        tests=tuple(f"tests/test_{i}.py" for i in range(6)),
        imports=(("src/m0.py", "src/m6.py"),),
    )
    plan = truth.plan_target(spec.message, many)
    assert _valid(plan, schemas.plan())
    assert [p["id"] for p in plan["parts"]] == [1, 2, 3, 4]
    assert plan["steps"][0]["file"] == "src/m1.py"  # m0 imports m6: m6 first, then m1
    assert plan["parts"][3]["title"].count("src/") == 4  # the rest merged into the last
    assert len(plan["steps"]) == 6 and len(plan["test_plan"]) == 4
    only_tests = truth.CommitTruth((), (), (), tests=("tests/test_a.py",))
    assert _valid(truth.plan_target("Add a test", only_tests), schemas.plan())
