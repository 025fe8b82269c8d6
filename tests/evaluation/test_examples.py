"""Label-blind evaluation examples: candidate order and wording never carry the label, and
every target labels exactly what the prompt shows."""

from __future__ import annotations

from appliance.campaign import targets

RETRIEVED = [
    ("pkg/a.py", "similar to the task (score 0.61)"),
    ("pkg/b.py", "matches the task's words"),
    ("pkg/c.py", "imports or is imported by a candidate"),
]


def test_label_blind_is_deterministic_per_key_and_differs_across_keys():
    items = [f"f{i}.py" for i in range(12)]
    first = targets.label_blind(items, "demo@abc")
    assert first == targets.label_blind(items, "demo@abc")
    assert sorted(first) == sorted(items)
    orders = {tuple(targets.label_blind(items, f"demo@{n}")) for n in range(6)}
    assert len(orders) > 1
    assert first != items  # 12! orders: the identity would be a broken shuffle


def test_scope_candidates_insert_real_files_with_the_same_neutral_why():
    listed = targets.scope_candidates(RETRIEVED, ["pkg/real.py", "pkg/a.py"], "demo@1")
    whys = dict(listed)
    assert set(whys) == {"pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/real.py"}
    # the inserted real file reads exactly like a retrieved one that is not real
    assert whys["pkg/real.py"] == whys["pkg/b.py"] == targets.CANDIDATE_WHY
    assert whys["pkg/c.py"] == targets.IMPORT_WHY
    assert not any("change" in why or "task analysis" in why for why in whys.values())


def test_scope_and_precision_targets_label_exactly_the_shown_items_in_order():
    shown = ["pkg/c.py", "pkg/real.py", "pkg/b.py"]
    target = targets.scope_target(["pkg/real.py", "pkg/gone.py"], shown, {"pkg/c.py"})
    assert [f["path"] for f in target["files"]] == shown
    assert [f["label"] for f in target["files"]] == ["supporting", "relevant", "irrelevant"]
    ids = ["m.py::g", "n.py::h", "m.py::f"]
    target = targets.precision_target(["m.py::f", "z.py::k"], ids)
    assert [s["symbol"] for s in target["symbols"]] == ids
    assert [s["label"] for s in target["symbols"]] == ["supporting", "excluded", "primary"]
