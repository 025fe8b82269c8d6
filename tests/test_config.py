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
        ("[cycle]\nmin_dpo_pairs = 0\n", "cycle.min_dpo_pairs"),
        ("[cycle]\ndpo_stages = ['poetry']\n", "unknown stages ['poetry']"),
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


@pytest.mark.parametrize(
    "content, words",
    [
        (bytes(range(256)) * 4, "is not text"),  # a binary file: UnicodeDecodeError before
        (b"\xff\xfe[packages]\n", "is not text"),
        (b"x = " + b"[" * 100_000, "nests too deep"),
        (b"x = " + b"9" * 5000 + b"\n", "not valid TOML"),  # int() refuses 5,000 digits
        (b"# " + b"a" * (2 << 20) + b"\n", "larger than 1 MiB"),
    ],
    ids=["binary", "utf16-bom", "nested", "long-number", "huge"],
)
def test_hostile_files_are_config_errors_naming_the_file(tmp_path, monkeypatch, content, words):
    path = tmp_path / "forge.toml"
    path.write_bytes(content)
    monkeypatch.setenv("FORGE_CONFIG", str(path))
    with pytest.raises(ConfigError) as err:
        load_config()
    assert words in str(err.value) and str(path) in str(err.value)


def test_the_cli_says_which_file_is_binary(tmp_path):
    """A binary forge.toml: exit 1 with the file named, no traceback."""
    from click.testing import CliRunner

    from appliance.cli import cli

    path = tmp_path / "forge.toml"
    path.write_bytes(b"\x00\x01\x02\xff\xfe binary \x89PNG")
    out = CliRunner(env={"FORGE_CONFIG": str(path), "FORGE_HOME": str(tmp_path / "home")}).invoke(
        cli, ["status"]
    )
    assert out.exit_code == 1, out.output
    assert str(path) in out.output and "is not text" in out.output
    assert "Traceback" not in out.output
