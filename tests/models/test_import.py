"""`forge models import`: a new base model version with its training base, or nothing."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.digest import sha256_file
from appliance.models.default_model import shipped_gguf
from appliance.models.hf_base import read_base_info
from appliance.models.manifest import (
    ModelFileError,
    check_gguf_header,
    gguf_metadata_value,
    read_manifest,
)
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
    assert base.path == models_home / source.name and base.sha256 == sha256_file(source)
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


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def _str(text: bytes) -> bytes:
    return _u64(len(text)) + text


def _gguf(tensors: int, keys: int, body: bytes) -> bytes:
    return b"GGUF" + _u32(3) + _u64(tensors) + _u64(keys) + body


ARCH = _str(b"general.architecture") + _u32(8) + _str(b"llama")
HOSTILE = {
    # the file: a key 2^60 bytes long (MemoryError before)
    "key-2^60": _gguf(0, 1, _u64(1 << 60) + b"general.architecture"),
    "keys-2^60": _gguf(0, 1 << 60, ARCH),
    "value-2^60": _gguf(0, 2, _str(b"x") + _u32(8) + _u64(1 << 60) + ARCH),
    "tensors-2^60": _gguf(1 << 60, 1, ARCH),
    "array-2^60-strings": _gguf(0, 2, _str(b"x") + _u32(9) + _u32(8) + _u64(1 << 60) + ARCH),
    "array-2^60-u64": _gguf(0, 2, _str(b"x") + _u32(9) + _u32(10) + _u64(1 << 60) + ARCH),
    "arrays-nested": _gguf(0, 2, _str(b"x") + (_u32(9) + _u32(9) + _u64(1)) * 50 + ARCH),
    "unknown-type": _gguf(0, 2, _str(b"x") + _u32(99) + ARCH),
    # a sound header whose one tensor's data lies far past the end of the file
    "tensor-past-the-end": _gguf(
        1, 1, ARCH + _str(b"w") + _u32(2) + _u64(1 << 20) + _u64(1 << 20) + _u32(0) + _u64(0)
    ),
    "tensor-5-dims": _gguf(1, 1, ARCH + _str(b"w") + _u32(5) + _u64(1) * 5 + _u32(0) + _u64(0)),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_header_is_refused_and_changes_nothing(models_home, tmp_path, name):
    """Every length and count in the header is checked against the file before use: exit 1
    with the file named, no traceback, models/ and models.toml as they were."""
    before = (models_home / "models.toml").read_text()
    bad = tmp_path / "hostile.gguf"
    bad.write_bytes(HOSTILE[name])
    out = CliRunner().invoke(cli, ["models", "import", str(bad), "--role", "coder"])
    assert out.exit_code == 1, out.output
    assert str(bad) in out.output and "cannot import" in out.output
    assert "damaged GGUF header" in out.output or "ends inside" in out.output
    assert "Traceback" not in out.output and isinstance(out.exception, SystemExit)
    assert (models_home / "models.toml").read_text() == before
    assert sorted(p.name for p in models_home.iterdir()) == ["models.toml"]


def test_the_header_reader_is_bounded_without_the_cli(tmp_path):
    bad = tmp_path / "key.gguf"
    bad.write_bytes(HOSTILE["key-2^60"])
    with pytest.raises(ModelFileError, match="a key claims 1152921504606846976 bytes"):
        gguf_metadata_value(bad, "general.architecture")
    good = tmp_path / "good.gguf"
    good.write_bytes(_gguf(0, 2, _str(b"x") + _u32(9) + _u32(8) + _u64(2) + _str(b"a") * 2 + ARCH))
    assert gguf_metadata_value(good, "general.architecture") == "llama"
    check_gguf_header(good)
    check_gguf_header(shipped_gguf())  # the real model: every tensor inside the file
