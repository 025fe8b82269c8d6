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


# --- the demo's examples -----------------------------------------------------------------


def test_scope_targets_label_exactly_the_paths_the_prompt_shows(demo_examples):
    scope = demo_examples.examples["scope"]
    assert len(scope) >= 8
    for example in scope:
        shown = example.context.paths
        assert [f["path"] for f in example.target["files"]] == shown
        assert example.input["candidates"] == shown
        enum = example.schema["properties"]["files"]["items"]["properties"]["path"]["enum"]
        assert enum == shown
        assert example.key == f"demo@{example.spec.sha}"
        assert any(f["label"] == "relevant" for f in example.target["files"])


def test_the_position_of_a_real_file_carries_no_signal(demo_examples):
    scope = demo_examples.examples["scope"]
    positions = [
        i for e in scope for i, f in enumerate(e.target["files"]) if f["label"] == "relevant"
    ]
    assert len(set(positions)) >= 4  # spread over the list, not first
    first_relevant = sum(e.target["files"][0]["label"] == "relevant" for e in scope)
    assert first_relevant / len(scope) <= 0.5
    # today's leak: the real files were listed first, in every example
    assert any(e.target["files"][0]["label"] != "relevant" for e in scope)


def test_no_why_text_depends_on_the_label(demo_examples):
    whys_by_label: dict[str, set[str]] = {}
    for example in demo_examples.examples["scope"]:
        labels = {f["path"]: f["label"] for f in example.target["files"]}
        for item in example.context.items:
            assert item.why in (targets.CANDIDATE_WHY, targets.IMPORT_WHY)
            whys_by_label.setdefault(labels[item.path], set()).add(item.why)
    # a relevant file reads like an irrelevant one
    assert whys_by_label["relevant"] <= whys_by_label["irrelevant"] | {targets.IMPORT_WHY}
    for example in demo_examples.examples["precision"]:
        assert {item.why for item in example.context.items} == {"in scope"}


def test_retrieval_rank_comes_from_the_retrieval_without_hints(demo_examples):
    for example in demo_examples.examples["scope"]:
        built = demo_examples.commits[example.spec.sha]
        retrieved = [p for p, _ in built.retrieved]
        rank = example.input["retrieval_rank"]
        for path in example.input["candidates"]:
            if path in retrieved:
                assert rank[path] == retrieved.index(path)
            else:  # a real file the retrieval missed, inserted
                assert path not in rank and path in built.present


def test_precision_lists_symbols_in_a_label_blind_order(demo_examples):
    precision = demo_examples.examples["precision"]
    assert len(precision) >= 8
    for example in precision:
        ids = example.input["symbols"]
        assert [s["symbol"] for s in example.target["symbols"]] == ids
        assert [item.text.split(": ", 1)[0] for item in example.context.items] == ids
        assert any(s["label"] == "primary" for s in example.target["symbols"])
    several = [e for e in precision if len(e.input["symbols"]) > 1]
    first_primary = sum(e.target["symbols"][0]["label"] == "primary" for e in several)
    assert several and first_primary < len(several)


def test_examples_are_deterministic_per_task(demo_examples):
    example = demo_examples.examples["scope"][0]
    built = demo_examples.commits[example.spec.sha]
    again = built.example("scope")
    assert again.input == example.input and again.target == example.target
    orders = {tuple(e.input["candidates"]) for e in demo_examples.examples["scope"]}
    assert len(orders) > 1


def test_every_stage_says_its_structured_input(demo_examples):
    for example in demo_examples.examples["task_analysis"]:
        assert example.input["task"] == example.spec.message
        assert example.input["retrieved"]
    for example in demo_examples.examples["plan"]:
        assert example.input["files"] == list(example.code_files)
