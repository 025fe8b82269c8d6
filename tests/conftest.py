"""Shared fixtures: a FORGE_HOME per test, real git repositories, real packages."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.store import open_db

ROOT = Path(__file__).resolve().parent.parent
DEMO_WHEELS = ROOT / "repo_packages" / ".demo-wheels"
PYTEST_PINS = [
    line.strip()
    for line in (ROOT / "repo_packages" / "demo_source" / "requirements.txt")
    .read_text()
    .splitlines()
    if line.strip() and not line.startswith("#")
]
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@tests.invalid",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@tests.invalid",
}


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """The pinned pytest wheels the demo ships; install.sh gathers them."""
    if not all(
        any(DEMO_WHEELS.glob(f"{pin.split('==')[0]}-{pin.split('==')[1]}-*.whl"))
        for pin in PYTEST_PINS
    ):
        import sys

        sys.path.insert(0, str(ROOT / "repo_packages"))
        from build_demo import gather_wheels

        gather_wheels()
    return DEMO_WHEELS


@pytest.fixture
def forge_home(tmp_path, monkeypatch):
    """A fresh FORGE_HOME with a forge.toml (quiet period 0) and a migrated database."""
    home = tmp_path / "forge-home"
    home.mkdir()
    (home / "forge.toml").write_text("[ingest]\nquiet_seconds = 0\n")
    monkeypatch.setenv("FORGE_HOME", str(home))
    monkeypatch.delenv("FORGE_CONFIG", raising=False)
    config = load_config()
    config.ensure_dirs()
    return config


@pytest.fixture
def db(forge_home):
    database = open_db(forge_home)
    yield database
    database.close()


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    full_env = {**os.environ, **GIT_ENV, **(env or {})}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=full_env
    ).stdout.strip()


class RepoBuilder:
    """A real git repository in a temp dir, written commit by commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main", "--template=")
        self.tick = 0

    def commit(self, message: str, files: dict[str, str | None], author: str | None = None) -> str:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git(self.path, "add", "-A")
        self.tick += 1
        date = f"2024-01-01T{self.tick % 24:02d}:00:00+00:00"
        env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        if author:
            name, email = author.rsplit(" <", 1)
            env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email.rstrip(">"))
        git(self.path, "commit", "-q", "-m", message, env=env)
        return git(self.path, "rev-parse", "HEAD")


CALC_V1 = "def add(a, b):\n    return a + b\n"
CALC_V2 = CALC_V1 + "\n\ndef sub(a, b):\n    return a - b\n"
TEST_V1 = "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
TEST_V2 = TEST_V1.replace("import add", "import add, sub") + (
    "\n\ndef test_sub():\n    assert sub(3, 2) == 1\n"
)
PYPROJECT = '[tool.pytest.ini_options]\npythonpath = ["src"]\ntestpaths = ["tests"]\n'


@pytest.fixture
def calc_repo(tmp_path) -> RepoBuilder:
    """A tiny real project: a root commit and one task commit (code + test)."""
    repo = RepoBuilder(tmp_path / "calc-src")
    repo.commit(
        "Create calculator with addition",
        {"pyproject.toml": PYPROJECT, "src/calc.py": CALC_V1, "tests/test_calc.py": TEST_V1},
    )
    repo.commit(
        "Add subtraction to the calculator", {"src/calc.py": CALC_V2, "tests/test_calc.py": TEST_V2}
    )
    return repo


def build(repo: RepoBuilder, output: Path, wheelhouse: Path, **options):
    from appliance.packages.build import BuildOptions, build_package

    opts = BuildOptions(
        source=str(repo.path),
        output=output,
        requirements=PYTEST_PINS,
        find_links=wheelhouse,
        **options,
    )
    return build_package(opts, cache_dir=output.parent / ".uv-cache")


@pytest.fixture
def calc_package(tmp_path, calc_repo, wheelhouse) -> Path:
    """A valid repo package built by the real builder from `calc_repo`."""
    return build(calc_repo, tmp_path / "calc-pkg", wheelhouse, name="calc", version="1.0").path


def copy_package(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    for path in [dest, *dest.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)  # writable, so tests can tamper
    return dest
