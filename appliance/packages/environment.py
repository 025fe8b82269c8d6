"""Python environments for a package, from its own wheels only, built with uv.

Used by validation (resolve + collect dry run) and later by the harness. Never touches
an index when given a wheel folder: `--no-index --offline --no-build`, so no sdist can
run and nothing is fetched.

No package content runs on the host. uv starts an environment's python to query it, with
`site` on, so every `.pth` in it would run: it is asked only while the environment is still
empty (one `uv pip install` right after `uv venv`), and nothing here starts it again. uv's
bytecode compilation starts it too, so it is not used: `compile_bytecode` runs the stdlib's
compileall (`-I -S`: no site, no .pth, nothing from the environment on sys.path) inside
the sandbox instead.

uv caches a local wheel by its path and modification time, not its content, so a wheel
replaced in place (same name, same mtime) would install the cached, older files. Wheels are
therefore installed from a store where each lives under its own sha256: a path names one
content, and the cache can never hand one package's wheel to another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from uv import find_uv_bin

from appliance.config import Config
from appliance.digest import sha256_file
from appliance.errors import ForgeError, SandboxError
from appliance.sandbox import Bind, Limits, SandboxRequest, base_python, run_sandboxed

WHEEL_STORE = ".wheel-store"  # beside uv's cache: <sha256>/<wheel file name>


class EnvironmentFailed(ForgeError):
    """uv could not resolve or install the requirements; `output` holds uv's words."""

    def __init__(self, what: str, output: str) -> None:
        super().__init__(f"{what}: {output.strip()[-3000:]}")
        self.output = output


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
    python_version: str | None = None,
    python_platform: str | None = None,
    index_url: str | None = None,
    exclude_newer: str | None = None,
    timeout: float = 300,
) -> list[str]:
    """Resolve `requirements` to a pinned set, wheels only: against `wheel_dir` alone, or
    (connected side, `wheel_dir=None`) against the package index (`index_url`, default
    PyPI). `python_version` ("3.12") and `python_platform` (uv's names, e.g.
    "x86_64-manylinux_2_28") resolve for another target than `python` itself;
    `exclude_newer` (RFC 3339) takes only files the index had by then."""
    python = python or base_python()
    if wheel_dir is not None:
        source = _source_args(wheel_dir)
    else:  # --only-binary :all: already forbids building; uv refuses it with --no-build
        source = ["--only-binary", ":all:"]
        if index_url:
            source += ["--index-url", index_url]
        if exclude_newer:  # only what the index held then (its upload times)
            source += ["--exclude-newer", exclude_newer]
    target = []
    if python_version:
        target += ["--python-version", python_version]
    if python_platform:
        target += ["--python-platform", python_platform]
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
            *target,
            *source,
        ],
        cache_dir=cache_dir,
        input="\n".join(requirements) + "\n",
        timeout=timeout,
        offline=wheel_dir is not None,
    )
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def wheel_hashes(wheel_dir: Path) -> tuple[tuple[str, str], ...]:
    """(file name, sha256) of every wheel in `wheel_dir` an install may pick, sorted."""
    return tuple(
        (path.name, sha256_file(path))
        for path in sorted(wheel_dir.glob("*.whl"))
        if path.is_file() and not path.is_symlink()
    )


def store_wheels(wheel_dir: Path, store: Path) -> dict[str, Path]:
    """Copy the wheels of `wheel_dir` into the content-addressed `store`; return each file
    name's folder there. The hash is taken of the copy, so what is stored is what it names."""
    folders = {}
    store.mkdir(parents=True, exist_ok=True)
    for path in sorted(wheel_dir.glob("*.whl")):
        if not path.is_file() or path.is_symlink():
            continue
        with tempfile.TemporaryDirectory(prefix=".in-", dir=store) as tmp:
            copy = Path(tmp) / path.name
            shutil.copyfile(path, copy)
            folder = store / sha256_file(copy)
            if not (folder / path.name).is_file():
                folder.mkdir(exist_ok=True)
                os.replace(copy, folder / path.name)  # atomic: a reader sees all or nothing
        folders[path.name] = folder
    return folders


def create_env(
    env_dir: Path,
    requirements: Sequence[str],
    wheel_dir: Path,
    *,
    cache_dir: Path,
    python: str | None = None,
    timeout: float = 600,
    expected_wheels: Sequence[tuple[str, str]] | None = None,
) -> Path:
    """A venv at `env_dir` with exactly `requirements` installed from the wheels of
    `wheel_dir`; return its python (which has not run: see the module's docstring).

    With `expected_wheels` ((name, sha256) pairs, as `wheel_hashes` gives) the wheels must
    be exactly those, or EnvironmentFailed: an environment holds what its key says."""
    python = python or base_python()
    folders = store_wheels(wheel_dir, cache_dir.parent / WHEEL_STORE)
    if expected_wheels is not None:
        found = sorted((name, folder.name) for name, folder in folders.items())
        if found != sorted(expected_wheels):
            raise EnvironmentFailed(
                f"the wheels in {wheel_dir} are not the ones the environment was asked for",
                f"expected {sorted(expected_wheels)}, found {found}",
            )
    _uv(["venv", "--quiet", "--python", python, str(env_dir)], cache_dir=cache_dir, timeout=timeout)
    env_python = env_dir / "bin" / "python"
    if requirements:
        links = [
            arg for folder in sorted(set(folders.values())) for arg in ("--find-links", str(folder))
        ]
        _uv(
            [
                "pip",
                "install",
                "--quiet",
                "--python",
                str(env_python),
                "--no-index",
                *links,
                "--no-build",
                "--offline",
                "-r",
                "-",
            ],
            cache_dir=cache_dir,
            input="\n".join(requirements) + "\n",
            timeout=timeout,
        )
    return env_python


def compile_bytecode(env_dir: Path, config: Config, *, timeout: float) -> None:
    """Write the .pyc files of `env_dir`'s packages, in the sandbox, the environment bound
    writable for this one run. Runs later find them (they cannot write their own: the
    environment is read-only to them) and start much faster.

    The stdlib's compileall on Forge's own interpreter, with `-I -S`: no site, so no .pth
    or sitecustomize, and nothing of the environment on sys.path; compiling only parses.
    Files that do not compile (a template, Python 2 leftovers) are left as they are, as
    pip and uv do: an import of one fails at run time the same way."""
    site_dirs = sorted(str(p) for p in env_dir.glob("lib/python3*/site-packages") if p.is_dir())
    if not site_dirs:
        return
    request = SandboxRequest(
        argv=(base_python(), "-I", "-S", "-m", "compileall", "-q", "-q", "-j", "0", *site_dirs),
        cwd=env_dir,
        binds=(Bind(env_dir, writable=True),),
        limits=Limits.from_settings(config.settings.sandbox, timeout),
    )
    try:
        result = run_sandboxed(request, config)
    except SandboxError as exc:
        raise EnvironmentFailed("bytecode compilation could not start", exc.message) from exc
    if result.stopped or result.returncode not in (0, 1):  # 1: some file did not compile
        raise EnvironmentFailed(f"bytecode compilation {result.describe()}", result.output)
