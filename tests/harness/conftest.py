"""Harness fixtures: a FORGE_HOME with the demo package ingested, shared by a module."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.packages import ingest
from appliance.packages.split import no_rows
from appliance.store import open_db

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "repo_packages" / "demo"


def make_home(path: Path, monkeypatch, toml: str = "") -> tuple:
    path.mkdir(parents=True, exist_ok=True)
    (path / "forge.toml").write_text("[ingest]\nquiet_seconds = 0\n" + toml)
    monkeypatch.setenv("FORGE_HOME", str(path))
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    config = load_config()
    config.ensure_dirs()
    return config, open_db(config)


def ingest_package(config, db, package: Path) -> None:
    result = ingest.ingest_one(config, db, package, keep=True, trained_rows=no_rows)
    assert result.outcome == "accepted", result.to_dict()


@contextlib.contextmanager
def demo_home_with(tmp_path_factory, name: str, toml: str = ""):
    """(config, db) of a fresh FORGE_HOME with `toml` in its forge.toml and the demo
    package ingested; FORGE_HOME points at it inside the block (a module fixture's body)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp_path_factory.mktemp(name) / "home", monkeypatch, toml)
        ingest_package(config, db, DEMO)
        yield config, db


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """(config, db) of a FORGE_HOME holding the demo package; two gold runs per commit."""
    if not (DEMO / "manifest.json").is_file():
        pytest.fail("repo_packages/demo is missing: run ./install.sh (it builds the demo)")
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(
            tmp_path_factory.mktemp("harness") / "home",
            monkeypatch,
            "[harness]\ngold_runs = 2\n",
        )
        ingest_package(config, db, DEMO)
        yield config, db
