"""Sandbox fixtures: a real docker engine and Forge's sandbox image, for the docker backend.

`docker_image` makes sure an engine answers and builds the image with the same code as
`forge sandbox image build` (once per session; a no-op when it is already up to date).
Without an engine the docker tests are skipped, except under CI (the CI variable set):
CI installs and starts the engine, so its absence there is a bug and fails the tests.
"""

from __future__ import annotations

import os

import pytest

from appliance.config import load_config
from appliance.errors import SandboxError


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The tag of an up-to-date sandbox image in a running engine."""
    from appliance.sandbox.docker import connect_engine
    from appliance.sandbox.image import DEFAULT_TAG, build_image

    try:
        connect_engine()
    except SandboxError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the docker engine (.ci/run starts it): {exc.message}")
        pytest.skip(f"no docker engine answers here: {exc.message}")
    return build_image(DEFAULT_TAG).tag


@pytest.fixture
def docker_sandbox_config(forge_home, docker_image):
    """forge_home's Config with the docker backend and the sandbox image."""
    toml = forge_home.home / "forge.toml"
    toml.write_text(
        toml.read_text() + f'\n[sandbox]\nbackend = "docker"\ndocker_image = "{docker_image}"\n'
    )
    config = load_config()
    assert config.settings.sandbox.backend == "docker"
    return config
