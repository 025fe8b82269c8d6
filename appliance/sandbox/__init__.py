"""The sandbox: the one way repository code (tests, model edits) is run.

`run_sandboxed` is that one function. The backend comes from `sandbox.backend` in
forge.toml: bubblewrap (default) or docker. If the chosen backend is unavailable Forge
says so and refuses; it never falls back to another backend or to running unconfined.
"""

from __future__ import annotations

from appliance.config import Config
from appliance.sandbox.bwrap import BwrapBackend, bwrap_path
from appliance.sandbox.identity import sandbox_ids
from appliance.sandbox.interpreter import base_python, interpreter_prefix
from appliance.sandbox.spec import (
    LIMITS,
    Backend,
    Bind,
    Limits,
    SandboxRequest,
    SandboxResult,
)

_checked: set[tuple] = set()


def backend_for(config: Config) -> Backend:
    settings = config.settings.sandbox
    if settings.backend == "docker":
        # The docker SDK (requests, ~0.1 s) is loaded only where the docker backend is used.
        from appliance.sandbox.docker import DockerBackend

        return DockerBackend(settings.docker_image, ids=sandbox_ids(settings))
    return BwrapBackend(hide=[config.home], ids=sandbox_ids(settings))


def check_sandbox(config: Config) -> Backend:
    """The configured backend, after checking it can start a sandbox (SandboxError if not)."""
    backend = backend_for(config)
    backend.check()
    _checked.add((backend.name, str(config.home), config.settings.sandbox.docker_image))
    return backend


def run_sandboxed(request: SandboxRequest, config: Config) -> SandboxResult:
    """Run `request` in the configured sandbox; SandboxError if it cannot be confined."""
    key = ("docker" if config.settings.sandbox.backend == "docker" else "bwrap",)
    key += (str(config.home), config.settings.sandbox.docker_image)
    backend = backend_for(config)
    if key not in _checked:
        check_sandbox(config)
    return backend.run(request)


__all__ = [
    "LIMITS",
    "Backend",
    "Bind",
    "BwrapBackend",
    "Limits",
    "SandboxRequest",
    "SandboxResult",
    "backend_for",
    "base_python",
    "bwrap_path",
    "check_sandbox",
    "interpreter_prefix",
    "run_sandboxed",
]
