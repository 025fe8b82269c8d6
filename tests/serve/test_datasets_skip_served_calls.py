"""A served call never becomes training data: datasets take the calls that campaign
records point at, and not even such a record makes a served call a row. The rows are built
by the real candidate-row code from records written through the campaign store and the
call log (the served calls through the same CallLog the server uses)."""

from __future__ import annotations

import pytest

from appliance.campaign import store as campaign_store
from appliance.campaign.store import StageRecord, SyntheticPair, Triple
from appliance.datasets.versions import build, rows_of
from appliance.packages import corpus
from appliance.packages.split import Holdout, history
from appliance.serving.calllog import SERVED, CallLog, ModelCall
from tests.harness.conftest import DEMO, ingest_package, make_home


@pytest.fixture
def home(tmp_path, monkeypatch):
    config, db = make_home(tmp_path / "home", monkeypatch)
    ingest_package(config, db, DEMO)
    yield config, db
    db.close()


def _call(sha: str) -> ModelCall:
    return ModelCall("chat", "coder", "base", "0" * 64, None, f"prompt for {sha}",
                     {"temperature": 0.7}, [{"role": "user", "content": sha}],
                     '{"edits": []}', "stop")  # fmt: skip


def _record(db, package_id: int, sha: str, call_id: int) -> None:
    """What a campaign records for one commit: a failed `code` sample pointing at its call,
    and the real commit's answer."""
    stage = StageRecord("code", {"edits": []}, call_id, None, None, {})
    triple = Triple(package_id, sha, 0, "parent", 0.7, 1, (stage,), (), "", "failed", "",
                    {}, {}, {})  # fmt: skip
    assert campaign_store.record_triple(db, triple)
    target = {"edits": [{"path": "a.py", "search": "x", "replace": sha}]}
    campaign_store.record_pairs(db, [SyntheticPair(package_id, sha, "code", {}, target)])


def test_served_calls_never_reach_a_dataset(home):
    config, db = home
    (package,) = corpus.packages(db)
    keep = Holdout.of(config, db)
    trainable = [s for s in history(db, "demo") if not keep.held_out("demo", s)]
    campaign, served = CallLog(config.db_path), CallLog(config.db_path, source=SERVED)
    by_campaign = trainable[:3]
    for sha in trainable[:5]:
        served(_call(sha))  # a client asked the same thing through forge serve
    for sha in by_campaign:
        _record(db, package.id, sha, campaign(_call(sha)))
    # A record that points at a served call (no campaign makes one): still no row from it.
    _record(db, package.id, trainable[3], served(_call(trainable[3])))
    sources = dict(db.execute("SELECT id, source FROM model_calls").fetchall())
    assert list(sources.values()).count(SERVED) == 6
    version = build(config, db, "code", "sft")
    rows = rows_of(db, "code", "sft", version.version)
    assert {r.task for r in rows} == {f"demo@{sha}" for sha in by_campaign}
    assert rows and all(sources[r.provenance.call_id] is None for r in rows)
    dpo = build(config, db, "code", "dpo")
    assert all(
        sources[r.provenance.call_id] is None for r in rows_of(db, "code", "dpo", dpo.version)
    )
