"""One test runner: validation's dry run is the harness's own run with `--collect-only`,
in the environment grading uses, so what validates is what grades."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from appliance.harness import testrun
from appliance.harness.envs import ensure_env
from appliance.harness.grading import grade_gold
from appliance.harness.spec import commit_specs, manifest_spec
from appliance.packages.gitsafe import clean_copy
from appliance.packages.ingest import ingest_one
from appliance.packages.manifest import read_manifest
from appliance.packages.split import no_rows
from appliance.packages.validate import validate
from appliance.sandbox import SandboxRequest
from tests.conftest import CALC_V1, CALC_V2, TEST_V1, TEST_V2, RepoBuilder, build

# A src layout as its developers have it: nothing tells pytest where the code is (no
# `pythonpath` setting), `pip install -e .` would; Forge puts src/ on the path instead.
SRC_PYPROJECT = '[project]\nname = "calc"\nversion = "0"\n\n[tool.pytest.ini_options]\n'


def src_layout_repo(path: Path, test_v2: str = TEST_V2) -> RepoBuilder:
    repo = RepoBuilder(path)
    repo.commit(
        "Create the calculator package",
        {
            "pyproject.toml": SRC_PYPROJECT,
            "src/calc/__init__.py": CALC_V1,
            "tests/test_calc.py": TEST_V1,
        },
    )
    repo.commit(
        "Add subtraction to the calculator",
        {"src/calc/__init__.py": CALC_V2, "tests/test_calc.py": test_v2},
    )
    return repo


@pytest.fixture
def requests(monkeypatch) -> list[SandboxRequest]:
    """Every request run_tests makes, in order; each still runs in the real sandbox."""
    made: list[SandboxRequest] = []
    real = testrun.run_sandboxed

    def record(request, config):
        made.append(request)
        return real(request, config)

    monkeypatch.setattr(testrun, "run_sandboxed", record)
    return made


def _normal(request: SandboxRequest) -> dict:
    """The request with what differs by construction between two runs made equal: the
    worktree's folder, the witness's per-run module name and nonce, the wall-time limit."""
    # The worktree is seen at a fixed place inside; its host folder is the bind's path.
    work = str(next(b.path for b in request.binds if b.target == request.cwd).parent)

    def plain(text: str) -> str:
        return re.sub(r"forge_witness_[0-9a-f]+", "forge_witness_X", text.replace(work, "WORK"))

    return {
        "argv": [plain(a) for a in request.argv],
        "cwd": plain(str(request.cwd)),
        "binds": [(plain(str(b.path)), b.writable, b.target) for b in request.binds],
        "env": {
            k: ("NONCE" if k == "FORGE_WITNESS_NONCE" else plain(v)) for k, v in request.env.items()
        },  # fmt: skip
        "limits": dataclasses.replace(request.limits, wall_s=0, cpu_s=0),
    }


def test_src_layout_project_validates_ingests_and_grades(
    tmp_path, wheelhouse, forge_home, db, requests
):
    repo = src_layout_repo(tmp_path / "src-calc")
    package = build(repo, tmp_path / "pkg", wheelhouse, name="srccalc", version="1").path

    report = validate(package, forge_home)
    assert report.ok, report.to_dict()
    assert (
        ingest_one(forge_home, db, package, keep=True, trained_rows=no_rows).outcome == "accepted"
    )
    (spec,) = commit_specs(forge_home, db, "srccalc")
    gold = grade_gold(forge_home, spec, runs=1)
    assert gold.usable, gold.to_dict()
    # Before the commit the module does not import (no `sub`): both tests are new passes.
    assert gold.fail_to_pass == ("tests/test_calc.py::test_add", "tests/test_calc.py::test_sub")

    # validate, ingest's validation, then grading: before and gold.
    dry, _, before, gold_run = requests
    assert dry.argv[-1] == "--collect-only" and "--collect-only" not in gold_run.argv
    assert _normal(before) == _normal(gold_run)  # the same run, at the parent
    dry_norm, gold_norm = _normal(dry), _normal(gold_run)
    assert dry_norm["argv"] == [*gold_norm["argv"], "--collect-only"]
    assert {k: v for k, v in dry_norm.items() if k != "argv"} == {
        k: v for k, v in gold_norm.items() if k != "argv"
    }
    # One environment: validation built it under the key grading asks for.
    manifest, sha256 = read_manifest(package)
    clean_copy(package / "repo", tmp_path / "copy.git")
    dry_spec = manifest_spec(manifest, sha256, package, tmp_path / "copy.git", spec.sha)
    assert dry_spec.env_key == spec.env_key
    env = ensure_env(forge_home, spec)
    assert not env.built
    assert any(b.path == env.path for b in dry.binds)
    assert [p.name for p in forge_home.dir("envs").iterdir() if not p.name.startswith(".")] == [
        spec.env_key
    ]


def test_collect_only_run_gives_the_collected_ids(tmp_path, wheelhouse, forge_home, db):
    repo = src_layout_repo(tmp_path / "src-calc")
    package = build(repo, tmp_path / "pkg", wheelhouse, name="srccalc", version="1").path
    assert (
        ingest_one(forge_home, db, package, keep=True, trained_rows=no_rows).outcome == "accepted"
    )
    (spec,) = commit_specs(forge_home, db, "srccalc")
    from appliance.harness.checkout import worktree

    env = ensure_env(forge_home, spec)
    with worktree(forge_home, spec.repo, spec.sha) as work:
        run = testrun.run_tests(forge_home, spec, work, env, collect_only=True)
    assert run.status == "ok", run
    assert run.collected == ("tests/test_calc.py::test_add", "tests/test_calc.py::test_sub")
    assert run.outcomes == {} and not run.network
    with worktree(forge_home, spec.repo, spec.parent) as work:
        # The parent's tests import fine; a missing name is a collection error there.
        (work / "repo" / "tests" / "test_calc.py").write_text(TEST_V2)
        run = testrun.run_tests(forge_home, spec, work, env, collect_only=True)
    assert run.status == "collection_error", run
    assert run.collection_errors == ("tests/test_calc.py",)


def test_src_layout_tests_that_try_the_network_are_refused(tmp_path, wheelhouse, forge_home):
    fetch = (
        "import urllib.request\n\n"
        "RATES = urllib.request.urlopen('http://rates.example.com/', timeout=5).read()\n\n"
    )
    repo = src_layout_repo(tmp_path / "net-src", test_v2=fetch + TEST_V2)
    package = build(repo, tmp_path / "pkg", wheelhouse, name="netcalc", version="1").path
    report = validate(package, forge_home)
    codes = [p.rule for p in report.problems]
    assert codes == ["dry-run-network"], report.to_dict()


def test_a_suite_that_collects_nothing_is_refused(tmp_path, wheelhouse, forge_home):
    repo = src_layout_repo(tmp_path / "none-src", test_v2="def helper():\n    return 1\n")
    package = build(repo, tmp_path / "pkg", wheelhouse, name="nocalc", version="1").path
    report = validate(package, forge_home)
    assert [p.rule for p in report.problems] == ["dry-run"], report.to_dict()
    assert "collected no tests" in report.problems[0].message


def test_a_module_needing_submodule_data_is_left_out_not_refused(tmp_path, wheelhouse, forge_home):
    """tomlkit's tests read toml-test from a git submodule, which a package cannot hold:
    that module does not collect; the package validates and the rest of the suite grades."""
    repo = src_layout_repo(tmp_path / "sub-src")
    data = "from pathlib import Path\n\nCASES = Path('tests/toml-test/files').read_text()\n"
    repo.commit(
        "Add multiplication to the calculator",
        {
            "src/calc/__init__.py": CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n",
            "tests/test_mul.py": "from calc import mul\n\n\ndef test_mul():\n"
            "    assert mul(2, 3) == 6\n",
            "tests/test_toml_tests.py": data + "\n\ndef test_cases():\n    assert CASES\n",
        },
    )
    package = build(repo, tmp_path / "pkg", wheelhouse, name="subcalc", version="1").path
    report = validate(package, forge_home)
    assert report.ok, report.to_dict()
