"""forge.toml: defaults without a file, clear errors for bad keys and values."""

from __future__ import annotations

import pytest

from appliance.config import load_config
from appliance.errors import ConfigError


def test_defaults_without_any_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    config = load_config()
    assert config.home == (tmp_path / "home").resolve()
    assert config.source in (None, config.home / "forge.toml") or str(config.source).startswith(
        "/etc"
    )
    assert config.settings.ingest.quiet_seconds == 30
    assert config.db_path == config.home / "forge.db"


def test_file_in_forge_home_is_read(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "forge.toml").write_text("[packages]\nmax_file_mb = 7\n")
    monkeypatch.setenv("FORGE_HOME", str(home))
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    config = load_config()
    assert config.settings.packages.max_file_mb == 7
    assert config.source == home / "forge.toml"


@pytest.mark.parametrize(
    "text, words",
    [
        ("[packages]\nmax_file_mb = -1\n", "packages.max_file_mb"),
        ("[packages]\nmax_fiel_mb = 1\n", "max_fiel_mb"),
        ("[ingest\n", "not valid TOML"),
        ("[ingest]\nquiet_seconds = 'soon'\n", "ingest.quiet_seconds"),
    ],
)
def test_bad_settings_are_named(tmp_path, monkeypatch, text, words):
    path = tmp_path / "forge.toml"
    path.write_text(text)
    monkeypatch.setenv("FORGE_CONFIG", str(path))
    with pytest.raises(ConfigError) as err:
        load_config()
    assert words in str(err.value)
    assert str(path) in str(err.value)


def test_missing_explicit_config_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


def test_training_defaults_and_stage_overrides(tmp_path, monkeypatch):
    path = tmp_path / "forge.toml"
    path.write_text("[training]\nlr = 1e-4\n\n[training.stages.scope]\nrank = 16\nmax_steps = 30\n")
    monkeypatch.setenv("FORGE_CONFIG", str(path))
    training = load_config().settings.training
    assert (training.rank, training.lora_alpha, training.lr) == (8, 16.0, 1e-4)
    assert len(training.target_modules) == 7 and training.schedule == "cosine"
    assert (training.grad_accum, training.checkpoint_every, training.keep_checkpoints) == (4, 20, 3)
    scope = training.for_stage("scope")
    assert (scope.rank, scope.lora_alpha, scope.max_steps, scope.lr) == (16, 32.0, 30, 1e-4)
    assert scope.stages == {} and training.for_stage("edit").rank == 8


@pytest.mark.parametrize(
    "text, words",
    [
        ("[training.stages.scope]\nrank = 0\n", "training.stages.scope.rank"),
        ("[training.stages.scope]\nrnak = 4\n", "training.stages.scope.rnak"),
        ("[training]\nschedule = 'cos'\n", "training.schedule"),
    ],
)
def test_bad_training_settings_are_named(tmp_path, monkeypatch, text, words):
    path = tmp_path / "forge.toml"
    path.write_text(text)
    monkeypatch.setenv("FORGE_CONFIG", str(path))
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_config()
