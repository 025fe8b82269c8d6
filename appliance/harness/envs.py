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

Each use touches the marker (at most once an hour), so `forge gc` can tell environments
and project overlays unused for retention.env_unused_days; it removes those no corpus
package's requirement sets need (`needed_keys`) under the same lock a build takes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.clock import now_iso
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.harness.spec import CommitSpec, environment_key
from appliance.packages import corpus
from appliance.packages.environment import (
    EnvironmentFailed,
    base_python,
    compile_bytecode,
    create_env,
)
from appliance.packages.manifest import read_manifest

MARKER = "forge-env.json"
PROJECT_MARKER = "forge-project.json"  # appliance.harness.install's overlays
PROJECTS = ".projects"
TOUCH_EVERY_S = 3600  # a warm lookup stays a stat: the marker's time is moved once an hour


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
    if mark_used(final / MARKER):
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


def mark_used(marker: Path) -> bool:
    """Whether `marker` (a complete environment's or overlay's) exists; its time is moved
    to now when it is older than TOUCH_EVERY_S, so gc sees the environment in use."""
    try:
        st = marker.stat()
    except OSError:
        return False
    if time.time() - st.st_mtime > TOUCH_EVERY_S:
        # A read-only FORGE_HOME still serves; gc then goes by the old time.
        with contextlib.suppress(OSError):
            os.utime(marker)
    return True


@dataclass(frozen=True)
class StoredEnvironment:
    """An environment (or a project overlay) on disk, and when it was last used."""

    key: str
    path: Path
    project: bool  # an overlay in envs/.projects/
    last_used: float  # the marker's mtime; a folder without one: the folder's


def stored_environments(config: Config) -> list[StoredEnvironment]:
    """Every environment folder and project overlay in envs/ (uv's cache and the wheel
    store, which are shared, are not among them)."""
    envs = config.dir("envs")
    found = []
    for folder, marker, project in ((envs, MARKER, False), (envs / PROJECTS, PROJECT_MARKER, True)):
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
                continue
            stamp = path / marker if (path / marker).is_file() else path
            found.append(StoredEnvironment(path.name, path, project, stamp.stat().st_mtime))
    return found


def needed_keys(config: Config, db) -> set[str]:
    """The environment keys the corpus's packages use: one per requirement set (the wheels
    as each manifest lists them, which validation held the package's files to)."""
    keys = set()
    for package in corpus.packages(db):
        try:
            manifest, _ = read_manifest(config.home / package.path)
        except (ForgeError, OSError):  # a package folder gone or damaged: its envs are moot
            continue
        wheels = sorted(manifest.wheels.items())
        keys |= {environment_key(reqs, wheels) for reqs in package.requirement_sets}
    return keys


def remove_environment(config: Config, env: StoredEnvironment) -> bool:
    """Delete `env` under the lock its builder takes; False when a build holds it now.
    The marker goes first: a folder without one is never used, only rebuilt."""
    folder = env.path.parent
    with open(folder / f".{env.key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        (env.path / (PROJECT_MARKER if env.project else MARKER)).unlink(missing_ok=True)
        shutil.rmtree(env.path, ignore_errors=True)
    return True  # the lock file stays: a builder may be waiting on it
