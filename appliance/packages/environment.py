"""Python environments for a package, from its own wheels only, built with uv.

Used by validation (resolve + collect dry run) and later by the harness. Never touches
an index when given a wheel folder: `--no-index --offline --no-build`, so no sdist can
run and nothing is fetched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from uv import find_uv_bin


class EnvironmentFailed(RuntimeError):
    """uv could not resolve or install the requirements; `output` holds uv's words."""

    def __init__(self, what: str, output: str) -> None:
        super().__init__(f"{what}: {output.strip()[-3000:]}")
        self.output = output


def base_python() -> str:
    """The interpreter environments are made from: the real binary, not Forge's venv link,
    so an environment needs only that Python's installation (which the sandbox shows)."""
    return os.path.realpath(sys.executable)


def _uv(
    args: Sequence[str],
    *,
    cache_dir: Path,
    input: str | None = None,
    timeout: float,
    offline: bool = True,
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV"))}
    env.update(
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(cache_dir),
        UV_PYTHON_DOWNLOADS="never",
        UV_LINK_MODE="hardlink",  # envs share files with the cache (same filesystem)
        NO_COLOR="1",
    )
    if offline:
        env["UV_OFFLINE"] = "1"
    try:
        proc = subprocess.run(
            [find_uv_bin(), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentFailed(f"uv {args[0]} ran past {timeout:g} s", "") from exc
    if proc.returncode != 0:
        raise EnvironmentFailed(f"uv {' '.join(args[:2])} failed", proc.stderr + proc.stdout)
    return proc.stdout


def _source_args(wheel_dir: Path) -> list[str]:
    return ["--no-index", "--find-links", str(wheel_dir), "--no-build", "--offline"]


def resolve(
    requirements: Sequence[str],
    wheel_dir: Path | None,
    *,
    cache_dir: Path,
    python: str | None = None,
    timeout: float = 300,
) -> list[str]:
    """Resolve `requirements` to a pinned set, wheels only: against `wheel_dir` alone, or
    (connected side, `wheel_dir=None`) against the package index."""
    python = python or base_python()
    source = (
        _source_args(wheel_dir)
        if wheel_dir is not None
        else ["--no-build", "--only-binary", ":all:"]
    )
    out = _uv(
        [
            "pip",
            "compile",
            "-",
            "--quiet",
            "--no-header",
            "--no-annotate",
            "--python",
            python,
            *source,
        ],
        cache_dir=cache_dir,
        input="\n".join(requirements) + "\n",
        timeout=timeout,
        offline=wheel_dir is not None,
    )
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def create_env(
    env_dir: Path,
    requirements: Sequence[str],
    wheel_dir: Path,
    *,
    cache_dir: Path,
    python: str | None = None,
    timeout: float = 600,
    compile_bytecode: bool = False,
) -> Path:
    """A venv at `env_dir` with exactly `requirements` installed; return its python.

    `compile_bytecode` writes .pyc files at install: an environment used for many runs
    (which cannot write them: it is read-only in the sandbox) then starts much faster."""
    python = python or base_python()
    _uv(["venv", "--quiet", "--python", python, str(env_dir)], cache_dir=cache_dir, timeout=timeout)
    env_python = env_dir / "bin" / "python"
    if requirements:
        _uv(
            [
                "pip",
                "install",
                "--quiet",
                "--python",
                str(env_python),
                *_source_args(wheel_dir),
                *(["--compile-bytecode"] if compile_bytecode else []),
                "-r",
                "-",
            ],
            cache_dir=cache_dir,
            input="\n".join(requirements) + "\n",
            timeout=timeout,
        )
    return env_python
