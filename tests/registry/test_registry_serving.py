"""The active version in service: the real model pool and the real SmolLM2 use what the
registry says at each request, so a rollback changes the very next call."""

from __future__ import annotations

import json

import pytest

from appliance import registry
from appliance.campaign.run import run_campaign
from appliance.digest import sha256_file
from appliance.models.default_model import shipped_gguf
from appliance.serving.bench import synthetic_adapter
from appliance.serving.pool import Adapter, ModelPool
from tests.harness.conftest import DEMO, ingest_package, make_home
from tests.registry.conftest import add_adapter

MESSAGES = [{"role": "user", "content": "Name three colours."}]
FAST = """
[harness]
gold_runs = 1
[campaign]
max_tokens = 32
context_tokens = 384
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry-serving")
    gguf = shipped_gguf()
    manifest = root / "models.toml"
    manifest.write_text(
        f'[bases.smol]\npath = "{gguf}"\nsha256 = "{sha256_file(gguf)}"\n'
        "context = 1024\nthreads = 1\n"
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(
            root / "home", monkeypatch, FAST + f'[models]\nmanifest = "{manifest}"\n'
        )
        for version in (1, 2):
            out = config.dir("adapters") / "scope" / f"scope-v{version}.gguf"
            out.parent.mkdir(parents=True, exist_ok=True)
            synthetic_adapter(gguf, out, rank=8, seed=version)
            add_adapter(db, "scope", version, base_sha256=sha256_file(gguf),
                        path=str(out.relative_to(config.home)))  # fmt: skip
        yield config, db


def test_after_a_rollback_the_next_request_uses_the_previous_adapter(home):
    config, db = home
    pool = ModelPool.from_config(config)  # logs every call to model_calls
    try:
        registry.promote(db, "scope", 1)
        registry.promote(db, "scope", 2)

        def ask(adapter):
            return pool.chat("reasoning", MESSAGES, adapter=adapter, max_tokens=16)

        served = ask(registry.active_adapter(config, db, "scope"))
        assert served.adapter == "scope-v2"
        registry.rollback(db, "scope")
        after = ask(registry.active_adapter(config, db, "scope"))
        logged = db.execute(
            "SELECT adapter, output FROM model_calls WHERE id = ?", [after.call_id]
        ).fetchone()
        assert logged == ("scope-v1", after.text)
        explicit = ask(Adapter("scope-v1", config.home / "adapters/scope/scope-v1.gguf"))
        assert explicit.adapter == "scope-v1"
        assert after.text == explicit.text != served.text
    finally:
        pool.close()


def test_the_resolver_reads_the_registry_at_each_call(home):
    config, db = home
    resolve = registry.resolver(config, db)
    if registry.active(db, "scope") is None:
        registry.promote(db, "scope", 1)
    current = registry.active(db, "scope")
    assert resolve("scope") == Adapter(current.name, config.home / current.path)
    assert resolve("plan") is None  # nothing active: the base
    other = 2 if current.version == 1 else 1
    registry.rollback(db, "scope", other)
    assert resolve("scope").name == f"scope-v{other}"
    registry.rollback(db, "scope", to_base=True)
    assert resolve("scope") is None


def test_a_campaign_uses_each_stage_s_active_adapter(home):
    config, db = home
    ingest_package(config, db, DEMO)
    current = registry.active(db, "scope")
    if current is None or current.version != 1:
        registry.rollback(db, "scope", 1)
    results = list(run_campaign(config, db, "demo", commits=1, samples=1))
    assert len(results) == 1
    (stages,) = db.execute("SELECT stages FROM triples").fetchone()
    used = {name: stage["adapter"] for name, stage in json.loads(stages).items()}
    assert used["scope"] == "scope-v1" and used["task_analysis"] is None
    call = json.loads(stages)["scope"]["call_id"]
    assert db.execute("SELECT adapter FROM model_calls WHERE id = ?", [call]).fetchone() == (
        "scope-v1",
    )
