"""The project installed as its developers do: its own build backend, in the sandbox,
offline, into an overlay on the shared environment.

The project here has an in-tree backend (PEP 517 `backend-path`), so it needs no wheel
Forge does not have: at build time it writes the version it is given (as setuptools-scm
and hatch-vcs do) into a generated `_version.py` the repository ignores, and its wheel
declares a console script. Its tests import that version, compare it with
importlib.metadata and run the script: none of that works from PYTHONPATH alone.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appliance.harness.checkout import worktree
from appliance.harness.envs import ensure_env
from appliance.harness.grading import grade_gold, grade_patch
from appliance.harness.install import ensure_project, scm_version
from appliance.harness.spec import commit_specs
from appliance.harness.testrun import run_tests
from tests.conftest import RepoBuilder, build, git
from tests.harness.conftest import ingest_package

BACKEND = textwrap.dedent(
    '''
    """An in-tree build backend: writes src/verpkg/_version.py, builds an editable wheel."""
    import os
    import zipfile
    from pathlib import Path

    WHEEL = "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


    def get_requires_for_build_editable(config_settings=None):
        # As hatchling in some modes: the editable hook needs a package not shipped.
        return ["editables~=0.3"] if Path("NO_EDITABLE").exists() else []


    def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
        if Path("BROKEN").exists():
            raise RuntimeError("the backend refuses: BROKEN is here")
        if Path("NETWORK").exists():
            import urllib.request

            urllib.request.urlopen("http://pypi.org/simple/", timeout=5)
        version = os.environ.get("SETUPTOOLS_SCM_PRETEND_VERSION", "0")
        Path("src/verpkg/_version.py").write_text(f"version = {version!r}\\n")
        dist = f"verpkg-{version}.dist-info"
        name = f"verpkg-{version}-py3-none-any.whl"
        with zipfile.ZipFile(Path(wheel_directory) / name, "w") as zf:
            zf.writestr("_verpkg.pth", str(Path.cwd() / "src") + "\\n")
            zf.writestr(
                f"{dist}/METADATA", f"Metadata-Version: 2.1\\nName: verpkg\\nVersion: {version}\\n"
            )
            zf.writestr(f"{dist}/WHEEL", WHEEL)
            scripts = "[console_scripts]\\nverpkg-hello = verpkg:hello\\n"
            zf.writestr(f"{dist}/entry_points.txt", scripts)
            zf.writestr(f"{dist}/RECORD", "")
        return name


    def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
        return build_editable(wheel_directory)
    '''
)
PYPROJECT = textwrap.dedent(
    """
    [build-system]
    requires = []
    build-backend = "backend"
    backend-path = ["_build"]

    [project]
    name = "verpkg"
    dynamic = ["version"]
    """
)
INIT_V1 = textwrap.dedent(
    """
    from ._version import version as __version__


    def hello():
        print("hello from verpkg")
    """
)
INIT_V2 = INIT_V1 + "\n\ndef shout(text):\n    return text.upper() + '!'\n"
TEST_V1 = textwrap.dedent(
    """
    import importlib.metadata
    import subprocess

    import verpkg


    def test_version_is_the_installed_one():
        assert verpkg.__version__ == importlib.metadata.version("verpkg")


    def test_console_script():
        out = subprocess.run(["verpkg-hello"], capture_output=True, text=True, check=True)
        assert out.stdout == "hello from verpkg\\n"
    """
)
TEST_V2 = TEST_V1 + "\n\ndef test_shout():\n    assert verpkg.shout('hi') == 'HI!'\n"


def verpkg_repo(path: Path, extra: dict[str, str | None] | None = None) -> RepoBuilder:
    """verpkg's history; `extra` files are added by the task commit and removed by a third
    one (so the newest commit, which validation collects, builds)."""
    repo = RepoBuilder(path)
    repo.commit(
        "Create verpkg with a generated version",
        {
            ".gitignore": "_version.py\n",
            "pyproject.toml": PYPROJECT,
            "_build/backend.py": BACKEND,
            "src/verpkg/__init__.py": INIT_V1,
            "tests/test_verpkg.py": TEST_V1,
        },
    )
    git(repo.path, "tag", "v1.4")
    repo.commit(
        "Add shout to verpkg",
        {"src/verpkg/__init__.py": INIT_V2, "tests/test_verpkg.py": TEST_V2, **(extra or {})},
    )
    if extra:
        repo.commit(
            "Add whisper to verpkg",
            {
                "src/verpkg/__init__.py": INIT_V2 + "\n\ndef whisper(t):\n    return t.lower()\n",
                "tests/test_verpkg.py": TEST_V2 + "\n\ndef test_whisper():\n"
                "    assert verpkg.whisper('HI') == 'hi'\n",
                **dict.fromkeys(extra),
            },
        )
    return repo


@pytest.fixture
def verpkg(tmp_path, forge_home, db, wheelhouse):
    """(config, db, spec) with verpkg ingested; `extra` files go into its task commit."""

    def make(extra: dict[str, str | None] | None = None):
        repo = verpkg_repo(tmp_path / "verpkg-src", extra)
        package = build(repo, tmp_path / "verpkg-pkg", wheelhouse, name="verpkg", version="1")
        ingest_package(forge_home, db, package.path)
        spec = commit_specs(forge_home, db, "verpkg")[0]  # "Add shout to verpkg"
        assert spec.message.startswith("Add shout")
        return forge_home, db, spec

    return make


def test_generated_version_metadata_and_console_script_work_in_every_run(verpkg):
    config, _db, spec = verpkg()
    assert scm_version(spec.repo, spec.sha) == f"1.5.dev1+g{spec.sha[:7]}"
    gold = grade_gold(config, spec, runs=2)
    assert gold.usable, gold.reason
    assert gold.fail_to_pass == ("tests/test_verpkg.py::test_shout",)
    # Both need the install: the version file does not exist in git, the script nowhere.
    assert set(gold.pass_to_pass) == {
        "tests/test_verpkg.py::test_version_is_the_installed_one",
        "tests/test_verpkg.py::test_console_script",
    }
    env = ensure_env(config, spec)
    shared = next(env.path.glob("lib/python3*/site-packages"))
    assert not list(shared.glob("*verpkg*")), "the shared environment was written"


def test_a_second_worktree_reuses_the_install_and_gets_the_generated_file(verpkg):
    config, _db, spec = verpkg()
    env = ensure_env(config, spec)
    with worktree(config, spec.repo, spec.sha) as work:
        first = ensure_project(config, spec, work, env)  # built by validation's dry run
        assert first is not None and first.editable
        assert (work / "repo" / "src" / "verpkg" / "_version.py").is_file()
    with worktree(config, spec.repo, spec.sha) as work:
        assert not (work / "repo" / "src" / "verpkg" / "_version.py").exists()
        run = run_tests(config, spec, work, env)
        assert (work / "repo" / "src" / "verpkg" / "_version.py").is_file()
    assert run.status == "ok" and run.counts()["passed"] == 3, run.output_tail
    projects = list((config.dir("envs") / ".projects").glob("*/forge-project.json"))
    assert len(projects) == 1


def test_a_failing_build_grades_the_commit_env_failed_with_the_log(verpkg):
    config, _db, spec = verpkg({"BROKEN": "yes\n"})
    gold = grade_gold(config, spec, runs=1)
    assert gold.status == "infra" and not gold.usable
    assert gold.reason.startswith("env_failed: the project does not build"), gold.reason
    assert gold.reason.endswith("RuntimeError: the backend refuses: BROKEN is here"), gold.reason
    env = ensure_env(config, spec)
    with worktree(config, spec.repo, spec.sha) as work:
        run = run_tests(config, spec, work, env)
    assert run.status == "build_failed"
    assert "the backend refuses: BROKEN is here" in run.output_tail


def test_a_build_that_tries_the_network_says_so(verpkg):
    config, _db, spec = verpkg({"NETWORK": "yes\n"})
    gold = grade_gold(config, spec, runs=1)
    assert gold.status == "infra"
    assert "tried to reach the network" in gold.reason, gold.reason


def test_an_edit_that_breaks_the_build_fails_and_is_not_infra(verpkg):
    config, _db, spec = verpkg()
    gold = grade_gold(config, spec, runs=1)
    assert gold.usable, gold.reason
    edits = [
        {
            "path": "src/verpkg/__init__.py",
            "search": "def hello",
            "replace": "def shout(t):\n    return t.upper() + '!'\n\n\ndef hello",
        },  # fmt: skip
        {"path": "BROKEN", "search": "", "replace": "oops\n"},
    ]
    verdict = grade_patch(config, spec, gold, "search_replace", edits)
    assert verdict.verdict == "failed", verdict
    assert "does not build with the edit" in verdict.reason


def test_the_version_keys_the_install_only_when_a_plugin_makes_it(tmp_path):
    from appliance.harness.envs import Environment
    from appliance.harness.install import project_key

    env = Environment("k" * 24, tmp_path / "env", False, 0.0)
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    for tree, project in [(static, 'version = "1.0"'), (dynamic, 'dynamic = ["version"]')]:
        (tree / "src" / "pkg").mkdir(parents=True)
        (tree / "pyproject.toml").write_text(f'[project]\nname = "pkg"\n{project}\n')
    assert project_key(static, env, "1.1.dev1+gaaaaaaa") == project_key(
        static, env, "1.1.dev2+gbbbbbbb"
    )
    assert project_key(dynamic, env, "1.1.dev1+gaaaaaaa") != project_key(
        dynamic, env, "1.1.dev2+gbbbbbbb"
    )
    before = project_key(static, env, "")
    (static / "src" / "other").mkdir()  # a new top-level package: what the install maps
    assert project_key(static, env, "") != before


def test_a_backend_missing_what_its_editable_hook_needs_builds_a_regular_wheel(verpkg):
    config, _db, spec = verpkg({"NO_EDITABLE": "yes\n"})
    env = ensure_env(config, spec)
    with worktree(config, spec.repo, spec.sha) as work:
        project = ensure_project(config, spec, work, env)
        assert project is not None and not project.editable
        run = run_tests(config, spec, work, env)
    assert run.status == "ok" and run.counts()["passed"] == 3, run.output_tail
