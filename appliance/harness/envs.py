"""Test environments: one venv per content (Python, platform, requirements, every wheel's
hash: `CommitSpec.env_key`), built once, reused.

Built with uv from the package's own wheels (no index, offline, no sdists), under a
lock; bytecode is compiled afterwards in the sandbox, so the environment's python never
runs on the host (see packages/environment.py); a marker file written last says it is
complete, so a crash never leaves a half-built environment that looks usable. uv's cache
lives in FORGE_HOME/envs too: on the same filesystem, installed files are hardlinks into
it, so each extra environment costs little disk. Those shared files are why no package
code may ever run with an environment writable: test runs see it read-only, and the one
writable run (the compile) executes nothing of the package. A broken environment is an
infrastructure failure, never a model's.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.clock import now_iso
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.harness.spec import CommitSpec
from appliance.packages.environment import (
    EnvironmentFailed,
    base_python,
    compile_bytecode,
    create_env,
)

MARKER = "forge-env.json"


class EnvironmentBroken(ForgeError):
    """The environment for a commit cannot be built: an infrastructure failure."""


@dataclass(frozen=True)
class Environment:
    key: str
    path: Path
    built: bool  # True when this call built it (cold), False when it was reused (warm)
    seconds: float

    @property
    def bin(self) -> Path:
        return self.path / "bin"


def _uv_cache(config: Config) -> Path:
    return config.dir("envs") / ".uv-cache"


def ensure_env(config: Config, spec: CommitSpec) -> Environment:
    """The environment for `spec`: reused when it exists, built (once, under a lock) when not."""
    started = time.monotonic()
    envs = config.dir("envs")
    envs.mkdir(parents=True, exist_ok=True)
    final = envs / spec.env_key
    if (final / MARKER).is_file():
        return Environment(spec.env_key, final, False, time.monotonic() - started)
    with open(envs / f".{spec.env_key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same one
        if (final / MARKER).is_file():
            return Environment(spec.env_key, final, False, time.monotonic() - started)
        # A venv is not relocatable, so it is built where it will live; the marker, written
        # last, is the commit point. A folder without one is left by a crash: start over.
        shutil.rmtree(final, ignore_errors=True)
        timeout = config.settings.harness.env_timeout_s
        try:
            create_env(
                final,
                spec.requirements,
                spec.wheels,
                cache_dir=_uv_cache(config),
                timeout=timeout,
                expected_wheels=spec.wheel_hashes,
            )
            # Every run would otherwise compile its imports again (it cannot keep them).
            compile_bytecode(final, config, timeout=timeout)
        except EnvironmentFailed as exc:
            shutil.rmtree(final, ignore_errors=True)
            raise EnvironmentBroken(
                f"the environment for {spec.package} cannot be built: {exc}",
                "check the package's wheels match this Python "
                f"({Path(base_python()).name}) and platform; forge package validate says more",
            ) from exc
        (final / MARKER).write_text(
            json.dumps(
                {
                    "key": spec.env_key,
                    "python": base_python(),
                    "requirements": list(spec.requirements),
                    "wheels": dict(spec.wheel_hashes),
                    "built_at": now_iso(),
                },
                indent=2,
            )
        )
    return Environment(spec.env_key, final, True, time.monotonic() - started)
