"""`forge models import`: a new base model version with its training base, or nothing."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.models.default_model import shipped_gguf
from appliance.models.hf_base import read_base_info
from appliance.models.manifest import read_manifest, sha256_of
from tests.conftest import private_models
from tests.serving.test_pool import gguf_header


@pytest.fixture
def models_home(tmp_path, monkeypatch):
    return private_models(tmp_path, monkeypatch)


def test_import_records_the_base_and_its_training_base(models_home, tmp_path):
    source = tmp_path / "Tiny-Coder.Q4_1.gguf"
    shutil.copyfile(shipped_gguf(), source)
    out = CliRunner().invoke(cli, ["models", "import", str(source), "--role", "coder", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output[out.output.index("{") :])
    assert data["name"] == "tiny-coder.q4_1"
    manifest = read_manifest(models_home / "models.toml")
    assert manifest.roles["coder"] == "tiny-coder.q4_1"
    assert manifest.roles["reasoning"] == "default"
    base = manifest.for_role("coder")
    assert base.path == models_home / source.name and base.sha256 == sha256_of(source)
    info = read_base_info(models_home / "Tiny-Coder.Q4_1.hf")
    assert info["gguf_sha256"] == base.sha256 and info["architecture"] == "llama"
    # Importing the same file again is harmless.
    again = CliRunner().invoke(cli, ["models", "import", str(source), "--role", "coder"])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    "content, words",
    [(b"PK\x03\x04 not a model", "not a GGUF file"), (gguf_header("bert"), "bert-architecture")],
)
def test_a_bad_file_is_refused_and_changes_nothing(models_home, tmp_path, content, words):
    before = (models_home / "models.toml").read_text()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    out = CliRunner().invoke(cli, ["models", "import", str(bad), "--role", "coder"])
    assert out.exit_code == 1 and words in out.output
    assert (models_home / "models.toml").read_text() == before
    assert sorted(p.name for p in models_home.iterdir()) == ["models.toml"]


def test_usage_errors(models_home, tmp_path):
    out = CliRunner().invoke(cli, ["models", "import", str(tmp_path / "nope.gguf"), "--role", "x"])
    assert out.exit_code == 2 and "does not exist" in out.output
    other = tmp_path / "other.gguf"
    other.write_bytes(gguf_header("llama"))
    out = CliRunner().invoke(
        cli, ["models", "import", str(other), "--role", "coder", "--name", "default"]
    )
    assert out.exit_code == 2 and "already in" in out.output
