"""A commit's K samples run stage by stage together (`run_pipelines`, the campaign's
`lockstep`): one batch per stage, each sample with its own temperature and seed, one
adapter per batch even when the active version changes between stages; the real
SmolLM2 through the real pool and the real index of the demo."""

from __future__ import annotations

import json

import pytest

from appliance import index
from appliance.campaign.run import run_campaign
from appliance.harness.spec import commit_specs
from appliance.serving.pool import Adapter, ModelPool
from appliance.stages import STAGE_ROLES
from appliance.stages.context import ContextBuilder
from appliance.stages.pipeline import StageSettings, run_pipelines
from tests.harness.conftest import demo_home_with

FAST = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 40
context_tokens = 320
"""
TEXT = "The lighthouse keeper's cat is named Quizzlebottom and it sleeps on the great lamp."


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with demo_home_with(tmp_path_factory, "lockstep", FAST) as (config, db):
        yield config, db


def _batches(db, since: int) -> dict[str, list[tuple]]:
    """batch id → (stage role, adapter, params, extra) of its calls after call `since`."""
    batches: dict[str, list[tuple]] = {}
    for role, adapter, params, extra in db.execute(
        "SELECT role, adapter, params, extra FROM model_calls WHERE id > ? ORDER BY id", [since]
    ).fetchall():
        extra = json.loads(extra)
        key = extra.get("batch") or f"alone-{len(batches)}"
        batches.setdefault(key, []).append((role, adapter, json.loads(params), extra))
    return batches


def _last_call(db) -> int:
    return db.execute("SELECT COALESCE(MAX(id), 0) FROM model_calls").fetchone()[0]


def test_a_lockstep_campaign_decodes_each_stage_of_its_samples_in_one_batch(home):
    config, db = home
    since = _last_call(db)
    results = list(run_campaign(config, db, "demo", commits=1, samples=3))
    assert [r.sample for r in results] == [0, 1, 2]
    triples = db.execute("SELECT sample, temperature, seed, call_ids FROM triples").fetchall()
    assert len(triples) == 3 and len({t[2] for t in triples}) == 3
    batches = _batches(db, since)
    first = [b for b in batches.values() if len(b) == 3]
    assert first, "the three samples' first stage shares one batch"
    for calls in first:
        assert len({json.dumps(c[2], sort_keys=True) for c in calls}) == 3  # own params each
        assert [c[3]["sequence"] for c in calls] == [0, 1, 2]
        assert {c[3]["batch_size"] for c in calls} == {3}
    temperatures = sorted(c[2]["temperature"] for c in first[0])
    assert temperatures == sorted(t[1] for t in triples)
    # Every call of every triple is in the call log, once.
    ids = [i for t in triples for i in json.loads(t[3])]
    assert len(ids) == len(set(ids)) == sum(len(b) for b in batches.values())


def test_an_adapter_switch_between_stages_never_mixes_adapters_in_a_batch(home, lora_factory):
    config, db = home
    tuned = Adapter("quiz-v1", lora_factory(TEXT, "quiz"))
    asked = []

    def flipping(stage: str) -> Adapter | None:  # a promote or rollback before every stage
        asked.append(stage)
        return tuned if len(asked) % 2 else None

    (spec,) = commit_specs(config, db, "demo")[:1]
    snapshot = index.index_commit(db, spec.repo, spec.parent, package_id=spec.package_id)
    pool = ModelPool.from_config(config)
    try:
        builder = ContextBuilder(
            db, snapshot, lambda text: pool.count_tokens(STAGE_ROLES["scope"], text)
        )
        settings = [StageSettings(temperature=t, seed=s, max_tokens=32, context_tokens=256)
                    for t, s in ((0.3, 1), (0.7, 2), (1.0, 3))]  # fmt: skip
        since = _last_call(db)
        results = run_pipelines(pool, builder, spec.message, settings, adapters=flipping)
        again = run_pipelines(
            pool,
            builder,
            spec.message,
            settings,
            adapters=lambda stage: tuned if stage == "task_analysis" else None,
        )
    finally:
        pool.close()
    batches = [b for b in _batches(db, since).values()]
    assert len(asked) >= 4  # one resolution per stage batch, not per sample
    for calls in batches:
        assert len({c[1] for c in calls}) == 1, calls  # one adapter in a batch
    used = [calls[0][1] for calls in batches[: len(asked)]]
    assert "quiz-v1" in used and None in used
    for result in results:
        adapters = [r.adapter for r in result.stages.values()]
        assert adapters[0] == "quiz-v1" and adapters[1] is None
    # A seeded batch repeats exactly: the same first stage under the same adapter.
    assert [r.stages["task_analysis"].raw for r in again] == [
        r.stages["task_analysis"].raw for r in results
    ]
