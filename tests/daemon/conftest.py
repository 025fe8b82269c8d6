"""A FORGE_HOME of its own for each daemon test."""

from __future__ import annotations

import pytest

from appliance.config import load_config
from appliance.store import open_db


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    config = load_config()
    config.ensure_dirs()
    return config, open_db(config)
