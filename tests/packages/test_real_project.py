"""A real public project end to end, offline: build, validate, ingest and gold-grade.

hukkin/tomli (MIT, src layout, flit-core, unittest suite run by pytest, no runtime
dependencies) is kept whole as a git bundle in tests/data/real/tomli/ (LICENSE beside it;
repo_packages/make_real_fixture.py remakes it on a connected machine). Its test suite
needs only pytest, whose pinned wheels the demo already ships (the `wheelhouse` fixture);
its build backend's wheel (flit-core) is in the fixture.

The package holds the commits since SINCE (at most MAX_COMMITS), so the whole module
stays well under a minute; the expectations below are what those upstream commits imply.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

from appliance.config import Config
from appliance.harness.grading import GoldResult, grade_patch
from appliance.harness.results import grade_commits
from appliance.harness.spec import CommitSpec, commit_specs, is_test_path
from appliance.packages import gitsafe, ingest
from appliance.packages.build import BuildOptions, BuildResult, build_package
from appliance.packages.manifest import Manifest
from appliance.packages.split import no_rows
from tests.conftest import PYTEST_PINS, ROOT, git
from tests.harness.conftest import make_home

FIXTURE = ROOT / "tests" / "data" / "real" / "tomli"
INFO = json.loads((FIXTURE / "fixture.json").read_text())
SINCE = datetime(2024, 10, 1)
MAX_COMMITS = 5

# The 54 commits since SINCE, as the filters see them: 47 are not tasks by their shape
# (merges, bots, messages, docs/CI only, no Python, too many files); of the other seven,
# f57fb669 (a new test of old behaviour) and b8a1358c ("Tests: remove ...") change only
# tests, 59ed9efb (a comment), 1da01ef7 (an import dropped) and 42a570d5 ("tooling: add
# ...", scripts) only code; d1d6a857 and 41881885 change both and are kept.
SCANNED = 54
REMOVED = {"merge": 5, "bot": 3, "message": 24, "docs-or-ci-only": 10, "no-python": 4,
           "too-many-files": 1, "no-test-change": 3, "tests-only": 2}  # fmt: skip
NO_F2P = "no test fails before the commit and passes at it"
EXPECTED = {
    # TOMLDecodeError gains attributes; tests/test_error.py tests them: a task.
    "d1d6a857": {
        "usable": True,
        "f2p": {
            "tests/test_error.py::TestError::test_deprecated_tomldecodeerror",
            "tests/test_error.py::TestError::test_tomldecodeerror",
        },
    },
    # Import time; its new test only imports `tomli._types`, which exists before too.
    "41881885": {"usable": False, "reason": NO_F2P},
}


def expected_for(sha: str) -> dict:
    return next(v for k, v in EXPECTED.items() if sha.startswith(k))


@dataclass(frozen=True)
class Graded:
    config: Config
    built: BuildResult
    manifest: Manifest
    ingested: ingest.IngestResult
    specs: dict[str, CommitSpec]
    golds: dict[str, GoldResult]
    times: dict[str, float]


@pytest.fixture(scope="module")
def tomli(tmp_path_factory, wheelhouse):
    """Build, ingest and gold-grade the package once, in a FORGE_HOME of its own."""
    tmp = tmp_path_factory.mktemp("real-tomli")
    times: dict[str, float] = {}
    started = time.monotonic()
    work = tmp / "tomli"
    git(tmp, "clone", "--quiet", "--branch", INFO["branch"], str(FIXTURE / "tomli.bundle"), "tomli")
    assert git(work, "rev-parse", "HEAD") == INFO["head"]
    # --find-links takes one folder: the demo's pytest pins and the fixture's own wheels.
    wheels = tmp / "wheels"
    wheels.mkdir()
    for wheel in [*wheelhouse.glob("*.whl"), *(FIXTURE / "wheels").glob("*.whl")]:
        shutil.copy2(wheel, wheels)
    times["clone"] = time.monotonic() - started
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp / "home", monkeypatch, "[harness]\ngold_runs = 2\n")

        started = time.monotonic()
        built = build_package(
            BuildOptions(
                source=str(work),
                output=tmp / "pkg",
                name="tomli",
                license=INFO["license"],
                # No -r: build reads tomli's own declarations (only [build-system]: flit-core,
                # from the fixture's wheels) and always adds pytest (the demo's wheels).
                find_links=wheels,
                test_timeout_s=120,
                since=SINCE,
                max_commits=MAX_COMMITS,
            ),
            cache_dir=config.dir("envs") / ".uv-cache",
        )
        times["build"] = time.monotonic() - started

        started = time.monotonic()
        ingested = ingest.ingest_one(
            config, db, built.path, keep=True, trained_rows=no_rows
        )  # validates first
        times["ingest"] = time.monotonic() - started

        started = time.monotonic()
        specs, golds = {}, {}
        if ingested.outcome == "accepted":
            specs = {spec.sha: spec for spec in commit_specs(config, db, "tomli")}
            golds = {
                spec.sha: result
                for spec, result, _ in grade_commits(config, db, list(specs.values()))
            }
        times["grade"] = time.monotonic() - started
        manifest = Manifest.model_validate_json((built.path / "manifest.json").read_text())
        yield Graded(config, built, manifest, ingested, specs, golds, times)


def test_the_fixture_is_small_whole_and_licensed():
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 1_000_000
    assert "MIT License" in (FIXTURE / "LICENSE").read_text()
    assert INFO["commits"] == 325
    assert [p.name for p in (FIXTURE / "wheels").iterdir()] == ["flit_core-3.12.0-py3-none-any.whl"]


def test_build_keeps_the_commits_that_change_code_and_tests(tomli):
    kept = [c.sha[:8] for c in tomli.manifest.commits]
    assert kept == list(EXPECTED)  # oldest first
    assert tomli.built.scanned == SCANNED
    assert {k: v for k, v in tomli.built.removed.items() if v} == REMOVED
    assert tomli.manifest.source.head == INFO["head"]
    shipped = {"-".join(wheel.split("-")[:2]) for wheel in tomli.manifest.wheels}
    assert {pin.replace("==", "-") for pin in PYTEST_PINS} <= shipped
    assert "flit_core-3.12.0" in shipped  # the build backend travels with the package


def test_the_package_validates_and_is_ingested(tomli):
    assert tomli.ingested.outcome == "accepted", tomli.ingested.to_dict()


def test_gold_grading_finds_the_tasks_the_history_implies(tomli):
    assert tomli.ingested.outcome == "accepted", tomli.ingested.to_dict()
    assert set(tomli.golds) == {c.sha for c in tomli.manifest.commits}
    for sha, result in tomli.golds.items():
        want = expected_for(sha)
        assert result.status == "ok", (sha, result.reason)
        assert result.usable == want["usable"], (sha, result.reason)
        if want["usable"]:
            assert set(result.fail_to_pass) == want["f2p"], (sha, result.fail_to_pass)
            assert result.pass_to_pass, sha  # the rest of the suite passes on both sides
            assert result.flaky == ()
        else:
            assert result.reason == want["reason"], sha
    usable = [sha for sha, r in tomli.golds.items() if r.usable]
    assert len(usable) >= 1
    print(f"\ntomli: kept {len(tomli.golds)}, usable {len(usable)}; " + ", ".join(
        f"{k} {v:.1f} s" for k, v in tomli.times.items()))  # fmt: skip


def test_the_commits_own_change_resolves_the_real_task(tomli):
    sha, gold = next((sha, r) for sha, r in tomli.golds.items() if r.usable)
    spec = tomli.specs[sha]
    names = gitsafe.git(["diff", "--name-only", spec.parent, sha], git_dir=spec.repo).decode()
    source = [p for p in names.split() if not is_test_path(p)]
    diff = gitsafe.git(["diff", spec.parent, sha, "--", *source], git_dir=spec.repo).decode()
    verdict = grade_patch(tomli.config, spec, gold, "diff", diff)
    assert verdict.verdict == "resolved", verdict.reason
    assert set(verdict.fail_to_pass) == set(gold.fail_to_pass)
    # And leaving the code as it was fails the task.
    assert grade_patch(tomli.config, spec, gold, "search_replace", []).verdict == "failed"
