"""The project itself, installed the way its developers do: built by its own backend, in
the sandbox, offline, into a small overlay environment on top of the shared one.

A project that declares a build (pyproject.toml with `[build-system]` or `[project]`, or a
setup.py) whose backend Forge has (its wheels ship in packages/, or it is in the tree) is
built and installed before its tests run: an editable wheel where the backend can (PEP
660), a regular one otherwise, from the backend and plugins in the shared dependency
environment, with no index and no network.
`setup.py` and build hooks are the package's code, so this runs in the sandbox
(project/build_project.py); version plugins (setuptools-scm, hatch-vcs, pdm's scm, poetry's
dynamic versioning) get the version `git describe` gives, since the worktree has no `.git`.

The install lands in an overlay: a venv of its own whose site-packages first holds the
project and then, through a `.pth` line, the shared environment. The shared environment is
never written. The overlay is keyed by what the install depends on (`project_key`: the
environment, the version, the build files' content and the tree's top-level layout) and
reused for every worktree with that key: the worktree is always seen at the same path in
the sandbox (WORKTREE), so an editable install made for one worktree points at the next
one too, and files the build wrote into the tree (a generated `_version.py`) are copied
into each new worktree. A commit whose build fails is `ProjectBuildFailed`, with the
build's output.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from appliance.config import Config
from appliance.errors import ForgeError, SandboxError
from appliance.harness.envs import PROJECT_MARKER, Environment, mark_used
from appliance.harness.spec import CommitSpec
from appliance.packages import gitsafe
from appliance.sandbox import Bind, Limits, SandboxRequest, base_python, run_sandboxed

WORKTREE = Path("/sandbox/repo")  # where every run sees its worktree
BUILDER = Path(__file__).resolve().parent / "project" / "build_project.py"
MARKER = PROJECT_MARKER  # written last: the overlay is complete; its time: last used
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
MAX_PYPROJECT_BYTES = 1 << 20
MAX_GENERATED_BYTES = 64 << 20
MAX_REPORT_BYTES = 1 << 20
LAYOUT_SKIP = {".git", "__pycache__", "build", "dist", ".eggs", ".tox", ".nox", ".venv"}
# What a run's output shows when its code tried to reach the network (the sandbox has
# none): the signs every run shares (testrun.py adds the test run's own) ...
NETWORK_SIGNS = (
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Name or service not known",
    "urlopen error",
)
# ... and what pip says when the tree's build wants a package from the index.
BUILD_NETWORK_SIGNS = (
    *NETWORK_SIGNS,
    "Could not find a version that satisfies",
    "No matching distribution found",
)


class ProjectBuildFailed(ForgeError):
    """The project's own build or install failed in the sandbox; `output` is its log."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message, "the build needs only what packages/ holds, offline")
        self.output = output


@dataclass(frozen=True)
class Project:
    """An installed project: the overlay environment tests run with."""

    key: str
    venv: Path
    built: bool  # this call built it (False: reused)
    seconds: float
    editable: bool

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def backend(repo: Path) -> tuple[str, bool] | None:
    """(the build backend the tree declares, whether it is in the tree: backend-path), or
    None when the tree declares no build: no setup.py, and no pyproject.toml with a
    `[build-system]` or `[project]` table (a pyproject.toml of tool settings alone is not).
    Without `build-backend`, PEP 517's default: setuptools' legacy backend."""
    pyproject = repo / "pyproject.toml"
    data: dict = {}
    if pyproject.is_file() and not pyproject.is_symlink():
        if pyproject.stat().st_size > MAX_PYPROJECT_BYTES:
            return LEGACY_BACKEND, False  # the build says what is wrong with it
        try:
            data = tomllib.loads(pyproject.read_text(errors="replace"))
        except tomllib.TOMLDecodeError:
            return LEGACY_BACKEND, False
    if not (repo / "setup.py").is_file() and "build-system" not in data and "project" not in data:
        return None
    system = data.get("build-system")
    system = system if isinstance(system, dict) else {}
    name = system.get("build-backend")
    return (name if isinstance(name, str) else LEGACY_BACKEND), bool(system.get("backend-path"))


def installable(repo: Path, env: Environment) -> bool:
    """Whether the tree declares a build whose backend Forge has: in the tree, or in the
    shared environment (the package ships its wheels). A package built before backends were
    shipped has none: its tests run from the tree alone, as they did then."""
    declared = backend(repo)
    if declared is None:
        return False
    name, in_tree = declared
    if in_tree:
        return True
    top = name.split(":")[0].split(".")[0].strip()
    site = _site(env.path)
    return bool(top) and ((site / top).is_dir() or (site / f"{top}.py").is_file())


@functools.lru_cache(maxsize=4096)
def scm_version(repo: Path, sha: str) -> str:
    """The version setuptools-scm would give `sha` (guess-next-dev): the tag's version at a
    tag, the next patch version with `.devN+gSHA` past one, `0.1.devN` with no tag."""

    try:
        out = gitsafe.git(["describe", "--tags", "--long", sha], git_dir=repo).decode().strip()
    except gitsafe.GitError:
        out = ""
    match = re.fullmatch(r"(?P<tag>.+)-(?P<distance>\d+)-g(?P<hash>[0-9a-f]+)", out)
    if match:
        try:
            tag = Version(match["tag"].removeprefix("v").removeprefix("V"))
        except InvalidVersion:
            tag = None
        if tag is not None:
            distance = int(match["distance"])
            if distance == 0:
                return str(tag)
            release = [*tag.release[:-1], tag.release[-1] + 1]
            return f"{'.'.join(map(str, release))}.dev{distance}+g{sha[:7]}"
    try:
        count = int(gitsafe.git(["rev-list", "--count", sha], git_dir=repo).decode().strip())
    except (gitsafe.GitError, ValueError):
        count = 0
    return f"0.1.dev{count}+g{sha[:7]}"


def static_version(repo: Path) -> bool:
    """Whether pyproject.toml states the version itself (`[project].version`): then no
    version plugin runs, and the version given to them cannot change the install."""
    pyproject = repo / "pyproject.toml"
    if not pyproject.is_file() or pyproject.is_symlink():
        return False
    if pyproject.stat().st_size > MAX_PYPROJECT_BYTES:
        return False
    try:
        project = tomllib.loads(pyproject.read_text(errors="replace")).get("project")
    except tomllib.TOMLDecodeError:
        return False
    return isinstance(project, dict) and isinstance(project.get("version"), str)


def project_key(repo: Path, env: Environment, version: str) -> str:
    """What an install of the tree at `repo` depends on: the shared environment, the
    version given to version plugins (unless the version is static: commits then share
    installs), the content of the build files and the names at the top of the tree and of
    src/ (a new top-level package changes what an install maps)."""
    if static_version(repo):
        version = ""
    files = {}
    for name in BUILD_FILES:
        path = repo / name
        if path.is_file() and not path.is_symlink():
            files[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    layout = {
        where: sorted(p.name for p in (repo / where).iterdir() if p.name not in LAYOUT_SKIP)
        for where in (".", "src")
        if (repo / where).is_dir() and not (repo / where).is_symlink()
    }
    data = {"v": 1, "env": env.key, "version": version, "files": files, "layout": layout}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def _site(venv: Path) -> Path:
    return (
        venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    )


def _make_overlay(venv: Path, env: Environment) -> None:
    """A venv on Forge's base interpreter that sees the shared environment after itself."""
    python = Path(base_python())
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(python)
    (venv / "bin" / "python3").symlink_to("python")
    (venv / "pyvenv.cfg").write_text(
        f"home = {python.parent}\ninclude-system-site-packages = false\n"
        f"version = {'.'.join(map(str, sys.version_info[:3]))}\n"
    )
    site = _site(venv)
    site.mkdir(parents=True)
    shared = _site(env.path)
    # An import line of a .pth runs at startup: addsitedir also reads the shared
    # environment's own .pth files, as running in it directly would.
    (site / "_forge_shared_env.pth").write_text(f"import site; site.addsitedir({str(shared)!r})\n")


def build_env(spec: CommitSpec, env: Environment, venv: Path) -> dict[str, str]:
    version = scm_version(spec.repo, spec.sha)
    return {
        "PATH": f"{venv / 'bin'}:{env.bin}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(venv),
        "SETUPTOOLS_SCM_PRETEND_VERSION": version,
        "PDM_BUILD_SCM_VERSION": version,
        "POETRY_DYNAMIC_VERSIONING_BYPASS": version,
        "PIP_NO_INDEX": "1",
        "SOURCE_DATE_EPOCH": "315532800",  # 1980: what wheels can hold
        "PYTHONHASHSEED": "0",
    }


def ensure_project(
    config: Config, spec: CommitSpec, work: Path, env: Environment
) -> Project | None:
    """The project of the worktree `work` installed in an overlay (None when the tree
    declares no build): reused when one with its key exists, else built in the sandbox."""
    started = time.monotonic()
    repo = work / "repo"
    if not installable(repo, env):
        return None
    key = project_key(repo, env, scm_version(spec.repo, spec.sha))
    projects = config.dir("envs") / ".projects"
    projects.mkdir(parents=True, exist_ok=True)
    final = projects / key
    with open(projects / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = not mark_used(final / MARKER)
        if built:
            shutil.rmtree(final, ignore_errors=True)  # a crash's leftover: no marker
            try:
                _build(config, spec, work, env, final)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
        marker = json.loads((final / MARKER).read_text())
        if not built:
            _restore(final / "tree", repo)
    return Project(key, final / "venv", built, time.monotonic() - started, marker["editable"])


def _build(config: Config, spec: CommitSpec, work: Path, env: Environment, final: Path) -> None:
    venv, report = final / "venv", work / "install"
    _make_overlay(venv, env)
    shutil.rmtree(report, ignore_errors=True)
    report.mkdir()
    timeout = config.settings.harness.env_timeout_s
    request = SandboxRequest(
        argv=(
            str(venv / "bin" / "python"),
            str(BUILDER),
            str(_site(venv)),
            str(venv / "bin"),
            str(report),
        ),  # fmt: skip
        cwd=WORKTREE,
        binds=(
            Bind(work / "repo", writable=True, target=WORKTREE),
            Bind(venv, writable=True),
            Bind(report, writable=True),
            Bind(env.path),
            Bind(BUILDER.parent),
        ),
        env=build_env(spec, env, venv),
        limits=Limits.from_settings(config.settings.sandbox, timeout),
    )
    try:
        result = run_sandboxed(request, config)
    except SandboxError as exc:
        raise ProjectBuildFailed(f"the build could not start: {exc.message}") from exc
    if result.stopped or result.returncode != 0:
        network = any(sign in result.output for sign in BUILD_NETWORK_SIGNS)
        why = (
            "it tried to reach the network, which the sandbox does not have"
            if network
            else result.describe()
        )
        raise ProjectBuildFailed(
            f"the project does not build: {why}{_last_error(result.output)}", result.output
        )
    done = _read_report(report / "generated.json")
    _keep_generated(work / "repo", done["generated"], final / "tree")
    (final / MARKER).write_text(
        json.dumps(
            {
                "backend": done["backend"],
                "editable": bool(done["editable"]),
                "dist_info": done["dist_info"],
                "generated": done["generated"],
                "sha": spec.sha,
                "seconds": round(result.duration_s, 3),
            },
            indent=2,
        )
    )


def _last_error(output: str) -> str:
    """The build log's last line of its own (the exception a traceback ends with), for the
    reason an operator reads; the builder's own `forge:` lines are left out."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    own = [ln for ln in lines if not ln.startswith("forge:")]
    return f": {own[-1][:300]}" if own else ""


def _read_report(path: Path) -> dict:
    """The builder's report, read as hostile data (the build ran beside it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(MAX_REPORT_BYTES + 1)
        data = json.loads(raw) if len(raw) <= MAX_REPORT_BYTES else None
    except (OSError, ValueError):
        data = None
    ok = (
        isinstance(data, dict)
        and isinstance(data.get("backend"), str)
        and isinstance(data.get("dist_info"), str)
        and isinstance(data.get("generated"), list)
        and all(isinstance(p, str) for p in data["generated"])
    )
    if not ok:
        raise ProjectBuildFailed("the build left no readable report of what it installed")
    return data


def _keep_generated(repo: Path, generated: list[str], store: Path) -> None:
    """Copy the files the build wrote into the tree to `store` (regular files only, never
    through a link, bounded), so later worktrees get them without a build."""
    total = 0
    for rel in generated:
        src = repo / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ProjectBuildFailed(f"the build reported a path outside the tree: {rel!r}")
        if any(p.is_symlink() for p in [src, *src.parents] if p.is_relative_to(repo)):
            continue  # a link the build made: not copied (nothing follows it on the host)
        if not src.is_file():
            continue  # written, then removed
        total += src.stat().st_size
        if total > MAX_GENERATED_BYTES:
            raise ProjectBuildFailed(
                f"the build wrote more than {MAX_GENERATED_BYTES >> 20} MB into the tree"
            )
        dest = store / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh, open(dest, "wb") as out:
            shutil.copyfileobj(fh, out)


def _restore(store: Path, repo: Path) -> None:
    """Put the files a reused build wrote into the tree into this worktree, where absent."""
    if not store.is_dir():
        return
    for src in sorted(store.rglob("*")):
        if not src.is_file() or src.is_symlink():
            continue
        dest = repo / src.relative_to(store)
        if any(p.is_symlink() for p in [dest, *dest.parents] if p.is_relative_to(repo)):
            continue
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
