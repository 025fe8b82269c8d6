"""A new base for a role makes the adapters trained on the old one not servable: the real
`forge models import`, then the registry on a models.toml changed by hand."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance import registry
from appliance.cli import cli
from appliance.config import load_config
from appliance.digest import sha256_file
from appliance.models.default_model import shipped_gguf
from appliance.models.manifest import gguf_metadata_value
from appliance.registry import RegistryRefused
from appliance.registry.bases import BASE_REPLACED
from appliance.store import open_db
from tests.conftest import private_models
from tests.registry.conftest import SHA, add_adapter


@pytest.fixture
def home(tmp_path, monkeypatch):
    """(config, db) with models.toml naming the shipped SmolLM2 for every role."""
    private_models(tmp_path, monkeypatch)
    config = load_config()
    db = open_db(config)
    yield config, db
    db.close()


def another_base(out):
    """The shipped GGUF with one letter of its general.name changed: a valid llama GGUF
    with another sha256."""
    data = bytearray(shipped_gguf().read_bytes())
    at = data.index(b"general.name") + len(b"general.name") + 4 + 8  # type, length
    data[at] = ord("X")
    out.write_bytes(data)
    assert gguf_metadata_value(out, "general.name").startswith("X")
    return out


def test_importing_a_base_invalidates_the_adapters_of_the_one_it_replaces(home, tmp_path):
    config, db = home
    old = sha256_file(shipped_gguf())
    add_adapter(db, "scope", 1, base_sha256=old)
    for version in (1, 2):
        add_adapter(db, "code", version, base_sha256=old)
    registry.promote(db, "scope", 1)
    registry.promote(db, "code", 1)
    kept = config.home / "adapters/code/code-v1.gguf"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"an adapter file")
    source = another_base(tmp_path / "Other-Coder.Q4_1.gguf")
    out = CliRunner().invoke(cli, ["models", "import", str(source), "--role", "coder", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output[out.output.index("{") :])["invalidated"] == ["code-v1", "code-v2"]
    # The coder role's stage (code) falls back to the base; the reasoning stages keep theirs.
    assert registry.active(db, "code") is None
    assert registry.active_adapter(config, db, "code") is None
    assert registry.active_adapter(config, db, "scope").name == "scope-v1"
    event = registry.history(db, "code")[-1]
    assert (event.action, event.from_name, event.to_name) == ("invalidate", "code-v1", "base")
    assert "coder role is now served by other-coder.q4_1" in event.note
    with pytest.raises(RegistryRefused, match="not servable"):
        registry.promote(db, "code", 2)
    assert kept.read_bytes() == b"an adapter file"  # files are never deleted
    listed = CliRunner().invoke(cli, ["adapters", "code", "--json"])
    assert [(a["name"], a["status"], a["servable"]) for a in json.loads(listed.output)] == [
        ("code-v1", "inactive", False),
        ("code-v2", "candidate", False),
    ]
    # Importing again changes nothing more.
    again = CliRunner().invoke(cli, ["models", "import", str(source), "--role", "coder", "--json"])
    assert json.loads(again.output[again.output.index("{") :])["invalidated"] == []


def test_a_hand_edited_models_toml_is_caught_when_a_stage_resolves(home):
    config, db = home
    add_adapter(db, "plan", 1, base_sha256=SHA)  # trained on a base models.toml lacks
    registry.promote(db, "plan", 1)
    assert registry.active_adapter(config, db, "plan") is None
    assert registry.get(db, "plan", 1).status == "inactive"
    [entry] = registry.versions(db, "plan")
    assert not entry.servable and entry.unservable_reason.startswith(BASE_REPLACED)
    assert registry.history(db, "plan")[-1].action == "invalidate"


def test_adapters_of_a_base_serving_again_become_servable_again(home):
    config, db = home
    add_adapter(db, "precision", 1, base_sha256=sha256_file(shipped_gguf()))
    db.execute(
        "UPDATE adapters SET servable = 0, unservable_reason = ? WHERE stage = 'precision'",
        [BASE_REPLACED + "trained on default, the reasoning role is now served by other"],
    )
    assert registry.invalidate_replaced(config, db) == []
    [entry] = registry.versions(db, "precision")
    assert entry.servable and entry.adapter.status == "candidate"  # never re-activated
