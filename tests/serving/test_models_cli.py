"""`forge models list|bench` on the shipped model, and synthetic adapters in the real pool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from appliance.cli import cli
from appliance.config import FORGE_ROOT
from appliance.digest import sha256_file
from appliance.models.manifest import read_manifest
from appliance.serving.bench import synthetic_adapter
from appliance.serving.pool import Adapter, ModelPool

DEFAULT_MANIFEST = FORGE_ROOT / "models" / "models.toml"
PROMPTS = ("The capital of France is", "def fibonacci(n):", "My favourite colour is")


def forge(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def default_gguf() -> Path:
    return read_manifest(DEFAULT_MANIFEST).bases[0].path


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, default_gguf) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return (
        synthetic_adapter(default_gguf, folder / "a.gguf", seed=0),
        synthetic_adapter(default_gguf, folder / "b.gguf", seed=1),
    )


@pytest.fixture(scope="module")
def pool():
    pool = ModelPool(read_manifest(DEFAULT_MANIFEST), log=None)
    yield pool
    pool.close()


def test_list_shows_the_default_base(forge_home):
    result = forge("models", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (base,) = data["bases"]
    assert base["architecture"] == "llama"
    assert base["exists"] and base["sha256_ok"] and base["problem"] is None
    assert base["size_bytes"] > 10_000_000
    assert base["device"] in ("cpu", "cuda:0")
    assert data["roles"] == {"reasoning": base["name"], "coder": base["name"]}
    assert data["loaded_adapters"] == []
    assert isinstance(data["gpus"], list)

    human = forge("models", "list")
    assert human.exit_code == 0
    assert base["name"] in human.output and "sha256 ok" in human.output
    assert "daemon" in human.output  # says the daemon's adapters are not visible here


def _manifest_with(tmp_path: Path, monkeypatch, file: Path, sha256: str) -> None:
    manifest = tmp_path / "models.toml"
    manifest.write_text(
        f'[bases.local]\npath = "{file}"\nsha256 = "{sha256}"\n\n'
        '[roles]\nreasoning = "local"\ncoder = "local"\n'
    )
    config = tmp_path / "forge.toml"
    config.write_text(f'[models]\nmanifest = "{manifest}"\n')
    monkeypatch.setenv("FORGE_CONFIG", str(config))


@pytest.mark.parametrize("damage", ["missing", "not_gguf", "wrong_sha256"])
def test_list_shows_a_damaged_base_and_fails(forge_home, tmp_path, monkeypatch, damage):
    file = tmp_path / "model.gguf"
    sha256 = "0" * 64
    if damage == "not_gguf":
        file.write_bytes(b"<html>not a model</html>")
        sha256 = sha256_file(file)
    elif damage == "wrong_sha256":
        file.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 16)
    _manifest_with(tmp_path, monkeypatch, file, sha256)

    result = forge("models", "list", "--json")
    assert result.exit_code == 1, result.output
    (base,) = json.loads(result.output)["bases"]
    expected = {
        "missing": "is missing",
        "not_gguf": "is not a GGUF file",
        "wrong_sha256": "has sha256",
    }[damage]
    assert expected in base["problem"]
    assert base["exists"] == (damage != "missing")
    assert base["sha256_ok"] is {"missing": None, "not_gguf": None, "wrong_sha256": False}[damage]

    human = forge("models", "list")
    assert human.exit_code == 1
    assert expected in human.output


def test_list_of_a_copied_default_base_is_clean(forge_home, tmp_path, monkeypatch, default_gguf):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(default_gguf, copy)
    _manifest_with(tmp_path, monkeypatch, copy, sha256_file(copy))
    result = forge("models", "list", "--json")
    assert result.exit_code == 0, result.output
    (base,) = json.loads(result.output)["bases"]
    assert base["name"] == "local" and base["sha256_ok"] and base["problem"] is None


def test_bench_measures_raw_pool_and_adapter(forge_home):
    result = forge("models", "bench", "--tokens", "16", "--repeat", "1", "--json")
    assert result.exit_code == 0, result.output
    (base,) = json.loads(result.output)["bases"]
    for side in ("raw", "pool", "pool_adapter"):
        assert base[side]["tokens_per_s"] > 0
        assert base[side]["tokens"] > 0
    assert base["ratio"] > 0
    assert base["same_output"]  # the pool decodes exactly as llama.cpp does


def test_synthetic_adapter_is_a_lora_adapter_for_the_base(adapters, default_gguf):
    import gguf

    from appliance.models.gguf_adapter import check_adapter_matches

    check_adapter_matches(adapters[0], default_gguf)  # raises if it does not fit
    reader = gguf.GGUFReader(adapters[0])
    assert str(reader.get_field("general.type").contents()) == "adapter"
    assert float(reader.get_field("adapter.lora.alpha").contents()) == 16.0
    names = {t.name for t in reader.tensors}
    for kind in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
        assert f"blk.0.{kind}.weight.lora_a" in names
        assert f"blk.0.{kind}.weight.lora_b" in names


def test_synthetic_adapter_changes_the_model_a_little(pool, adapters):
    base = pool.base_for("reasoning")
    a = Adapter("synthetic-a", adapters[0])
    with base.lock:
        tokens = base.tokenize(PROMPTS[0])
        base.use(None)
        bare = base.last_logprobs(tokens)
        base.use(a)
        adapted = base.last_logprobs(tokens)
        base.use(None)
    assert not np.allclose(bare, adapted)
    # A small change: the distribution over the vocabulary is still nearly the same.
    assert np.corrcoef(bare, adapted)[0, 1] > 0.95

    texts = [
        (
            pool.complete("reasoning", p, max_tokens=24).text,
            pool.complete("reasoning", p, adapter=a, max_tokens=24).text,
        )
        for p in PROMPTS
    ]
    assert any(plain != adapted for plain, adapted in texts), texts


def test_adapter_output_is_the_same_after_switching_away_and_back(pool, adapters):
    a = Adapter("synthetic-a", adapters[0])
    b = Adapter("synthetic-b", adapters[1])
    prompt = PROMPTS[1]
    first = pool.complete("reasoning", prompt, adapter=a, max_tokens=24)
    bare = pool.complete("reasoning", prompt, max_tokens=24)
    other = pool.complete("reasoning", prompt, adapter=b, max_tokens=24)
    again = pool.complete("reasoning", prompt, adapter=a, max_tokens=24)
    assert again.tokens == first.tokens
    assert bare.adapter is None and first.adapter == again.adapter == "synthetic-a"
    assert other.adapter == "synthetic-b"
    assert pool.complete("reasoning", prompt, max_tokens=24).tokens == bare.tokens
