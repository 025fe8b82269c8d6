"""Training targets that describe their prompts: a scope or precision row's real-commit
answer labels exactly what the campaign call showed (the demo repository, the real small
model through the real pool, a real database)."""

from __future__ import annotations

import json

import pytest

from appliance import index
from appliance.campaign import store, targets, truth
from appliance.campaign.run import Worker
from appliance.datasets.rows import candidate_rows
from appliance.harness.spec import commit_specs
from appliance.stages import STAGE_ROLES, schemas
from appliance.stages.context import ContextBuilder
from appliance.stages.pipeline import StageSettings, run_stage
from tests.harness.conftest import demo_home  # noqa: F401 - a fixture, used by name

CONVERSIONS = "Reject conversions between incompatible dimensions"
WHITESPACE = "Strip surrounding whitespace before parsing quantities"


def every(*commit) -> bool:
    return True  # every commit may be trained on here (whatever `trainable` is passed)


@pytest.fixture(scope="module")
def worker(demo_home):  # noqa: F811 - the fixture above, by name
    config, _ = demo_home
    return Worker(config)


def _spec(worker, subject):
    return next(
        s for s in commit_specs(worker.config, worker.db, "demo") if s.message.startswith(subject)
    )


def _record(worker, spec, stage: str, sample: int, *, hints=(), budget=160, pairs=True):
    """A campaign sample of one stage as the campaign records it: the real model's call on
    the stage's context (cut by `budget`), the triple, and (`pairs`) the commit's pairs."""
    snapshot = index.index_commit(worker.db, spec.repo, spec.parent, package_id=spec.package_id)
    builder = ContextBuilder(
        worker.db, snapshot, lambda t: worker.pool.count_tokens(STAGE_ROLES["scope"], t)
    )
    real = truth.commit_truth(spec)
    if pairs:
        worker._record_pairs(spec, snapshot, builder, real)
    if stage == "scope":
        candidates = builder.candidates(spec.message, hints=hints)
        context = builder.scope(candidates, budget)
        schema = schemas.scope([p for p, _ in candidates])
    else:
        context, ids = builder.precision(list(real.files), budget)
        schema = schemas.precision(ids)
    settings = StageSettings(max_tokens=48, seed=sample)
    result = run_stage(worker.pool, stage, context, schema, settings, None, task=spec.message)
    record = store.StageRecord(stage, result.output, result.call_id, None, None, context.to_dict())
    store.record_triple(
        worker.db,
        store.Triple(spec.package_id, spec.sha, sample, spec.parent, 0.0, sample, (record,), (),
                     "", "failed", "test", {}, {}, {}),
    )  # fmt: skip
    return context, real


def _real_rows(worker, stage, spec):
    rows = [r for r in candidate_rows(worker.db, stage, every) if r.task.endswith(spec.sha)]
    sft = [r for r in rows if r.source == "real commit"]
    dpo = [r for r in rows if r.source == "real commit over sample"]
    return sft, dpo


def test_a_scope_row_labels_exactly_the_paths_its_call_showed(worker):
    spec = _spec(worker, CONVERSIONS)
    named = ["src/metrica/parser.py"]  # a task analysis that named a wrong file
    context, real = _record(worker, spec, "scope", 0, hints=named, budget=120)
    shown = context.paths
    assert shown and context.left_out  # the budget cut some candidates
    pair = store.synthetic_pair(worker.db, spec.package_id, spec.sha, "scope")
    assert pair.input["real_files"] == list(real.files)  # the commit's facts, kept
    # The stored pair lists the label-blind retrieval evaluation uses (no hints, the task
    # key's seeded order), not the call's list.
    snapshot = index.index_commit(worker.db, spec.repo, spec.parent, package_id=spec.package_id)
    builder = ContextBuilder(worker.db, snapshot, lambda t: 1)
    present = [p for p in real.files if p in builder.files]
    blind = targets.scope_candidates(builder.candidates(spec.message), present, f"demo@{spec.sha}")
    assert pair.input["candidates"] == [p for p, _ in blind] != shown
    (sft,), dpo = _real_rows(worker, "scope", spec)
    for answer in [sft.completion, *(r.chosen for r in dpo)]:
        files = json.loads(answer)["files"]
        assert [f["path"] for f in files] == shown  # exactly the shown list, in its order
        for f in files:
            assert (f["label"] == "relevant") == (f["path"] in real.files)
    assert shown[0] == "src/metrica/parser.py"  # named first, as the pipeline lists it
    assert json.loads(sft.completion)["files"][0]["label"] != "relevant"


def test_a_precision_row_labels_exactly_the_symbols_its_call_listed(worker):
    spec = _spec(worker, CONVERSIONS)
    context, real = _record(worker, spec, "precision", 1, budget=200, pairs=False)
    listed = [item.text.split(": ", 1)[0] for item in context.items]
    (sft,), _ = _real_rows(worker, "precision", spec)
    symbols = json.loads(sft.completion)["symbols"]
    assert [s["symbol"] for s in symbols] == listed
    primary = {s["symbol"] for s in symbols if s["label"] == "primary"}
    assert primary and primary == set(listed) & set(real.symbols)


def test_a_pair_without_the_commits_facts_still_gives_rows(worker):
    """A pair recorded before pairs kept the commit's facts: its stored labels, only for
    the shown paths, in the call's order; a shown path it never labelled is irrelevant."""
    spec = _spec(worker, WHITESPACE)
    store.record_pairs(
        worker.db,
        [store.SyntheticPair(spec.package_id, spec.sha, "scope", {"task": spec.message},
                             {"files": [{"path": "src/metrica/parser.py", "label": "relevant"},
                                        {"path": "README.md", "label": "supporting"}]})],
    )  # fmt: skip
    context, _ = _record(worker, spec, "scope", 0, budget=400, pairs=False)
    (sft,), _ = _real_rows(worker, "scope", spec)
    files = json.loads(sft.completion)["files"]
    assert [f["path"] for f in files] == context.paths
    labels = {f["path"]: f["label"] for f in files}
    assert labels.pop("src/metrica/parser.py") == "relevant"
    assert labels.pop("README.md", "supporting") == "supporting"  # the stored label
    assert labels and set(labels.values()) == {"irrelevant"}  # never labelled by the pair
