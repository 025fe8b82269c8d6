"""A real public project end to end, offline: build, validate, ingest and gold-grade.

hukkin/tomli (MIT, src layout, flit-core, unittest suite run by pytest, no runtime
dependencies) is kept whole as a git bundle in tests/data/real/tomli/ (LICENSE beside it;
repo_packages/make_real_fixture.py remakes it on a connected machine). Its test suite
needs only pytest, whose pinned wheels the demo already ships (the `wheelhouse` fixture).

The package holds the newest few commits since SINCE, so the whole module stays well
under a minute; the expectations below are what those upstream commits imply.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from appliance.harness.results import grade_commits
from appliance.harness.spec import commit_specs
from appliance.packages.build import BuildOptions, build_package
from appliance.packages.manifest import Manifest
from tests.conftest import PYTEST_PINS, ROOT, git
from tests.harness.conftest import make_home

FIXTURE = ROOT / "tests" / "data" / "real" / "tomli"
INFO = json.loads((FIXTURE / "fixture.json").read_text())
SINCE = datetime(2024, 10, 1)
MAX_COMMITS = 5

# What each commit the package may keep implies (sha prefix → expected gold result).
# Today's filters keep all five; a filter that wants both code and tests keeps only the
# two marked "code+tests": the test checks whichever of these the build kept.
NO_TESTS = "the commit changes no test file"
NO_F2P = "no test fails before the commit and passes at it"
EXPECTED = {
    # tests/test_misc.py only: a new test of behaviour that already existed.
    "f57fb669": {"usable": False, "reason": NO_F2P, "code+tests": False},
    # a comment in src/tomli/_re.py.
    "59ed9efb": {"usable": False, "reason": NO_TESTS, "code+tests": False},
    # TOMLDecodeError gains attributes; tests/test_error.py tests them.
    "d1d6a857": {
        "usable": True,
        "f2p": {
            "tests/test_error.py::TestError::test_deprecated_tomldecodeerror",
            "tests/test_error.py::TestError::test_tomldecodeerror",
        },
        "code+tests": True,
    },
    # import time; the new test only imports `tomli._types`, which exists before too.
    "41881885": {"usable": False, "reason": NO_F2P, "code+tests": True},
    # the `typing` import goes; no test changes.
    "1da01ef7": {"usable": False, "reason": NO_TESTS, "code+tests": False},
}


def expected_for(sha: str) -> dict:
    return next(v for k, v in EXPECTED.items() if sha.startswith(k))


@pytest.fixture(scope="module")
def tomli(tmp_path_factory, wheelhouse):
    """Build, ingest and gold-grade the package once: (manifest, build, ingest, golds, times)."""
    tmp = tmp_path_factory.mktemp("real-tomli")
    times: dict[str, float] = {}
    started = time.monotonic()
    work = tmp / "tomli"
    git(tmp, "clone", "--quiet", "--branch", INFO["branch"], str(FIXTURE / "tomli.bundle"), "tomli")
    assert git(work, "rev-parse", "HEAD") == INFO["head"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        config, db = make_home(tmp / "home", monkeypatch, "[harness]\ngold_runs = 2\n")
        times["clone"] = time.monotonic() - started

        started = time.monotonic()
        built = build_package(
            BuildOptions(
                source=str(work),
                output=tmp / "pkg",
                name="tomli",
                license=INFO["license"],
                # Today's build does not read the project's declarations: the requirements
                # are given (`-r`), and the wheels come from the demo's pytest pins.
                requirements=PYTEST_PINS,
                find_links=wheelhouse,
                # The validation dry run does not put src/ on the path (the harness does):
                # pytest's own `pythonpath` setting does it for both, for a src layout.
                test_command=("pytest", "-q", "-o", "pythonpath=src"),
                test_timeout_s=120,
                since=SINCE,
                max_commits=MAX_COMMITS,
            ),
            cache_dir=config.dir("envs") / ".uv-cache",
        )
        times["build"] = time.monotonic() - started

        from appliance.packages import ingest

        started = time.monotonic()
        ingested = ingest.ingest_one(config, db, built.path, keep=True)
        times["ingest"] = time.monotonic() - started

        started = time.monotonic()
        golds = {}
        if ingested.outcome == "accepted":
            specs = commit_specs(config, db, "tomli")
            golds = {spec.sha: result for spec, result, _ in grade_commits(config, db, specs)}
        times["grade"] = time.monotonic() - started
        manifest = Manifest.model_validate_json((built.path / "manifest.json").read_text())
        yield manifest, built, ingested, golds, times


def test_the_fixture_is_small_whole_and_licensed():
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 1_000_000
    assert "MIT License" in (FIXTURE / "LICENSE").read_text()
    assert INFO["commits"] == 325


def test_build_keeps_the_newest_commits_that_make_tasks(tomli):
    manifest, built, *_ = tomli
    kept = [c.sha for c in manifest.commits]
    assert built.scanned == len(kept) + sum(built.removed.values())  # each counted once
    assert kept, "no commit kept"
    assert len(kept) <= MAX_COMMITS
    assert all(any(sha.startswith(k) for k in EXPECTED) for sha in kept), kept
    # Whatever the filters, the two commits that change code and its tests are kept.
    assert {k for k, v in EXPECTED.items() if v["code+tests"]} <= {sha[:8] for sha in kept}
    assert manifest.source.head == INFO["head"]
    assert sorted(manifest.requirements) == sorted(PYTEST_PINS)


def test_the_package_validates_and_is_ingested(tomli):
    _, _, ingested, _, _ = tomli
    assert ingested.outcome == "accepted", ingested.to_dict()


def test_gold_grading_finds_the_tasks_the_history_implies(tomli):
    manifest, _, ingested, golds, times = tomli
    assert ingested.outcome == "accepted", ingested.to_dict()
    assert set(golds) == {c.sha for c in manifest.commits}
    for sha, result in golds.items():
        want = expected_for(sha)
        assert result.status == "ok", (sha, result.reason)
        assert result.usable == want["usable"], (sha, result.reason)
        if want["usable"]:
            assert set(result.fail_to_pass) == want["f2p"], (sha, result.fail_to_pass)
            assert result.pass_to_pass, sha  # the rest of the suite passes on both sides
            assert result.flaky == ()
        else:
            assert result.reason == want["reason"], sha
    usable = [sha for sha, r in golds.items() if r.usable]
    assert len(usable) >= 1
    print(f"\ntomli: kept {len(golds)}, usable {len(usable)}; " + ", ".join(
        f"{k} {v:.1f} s" for k, v in times.items()))  # fmt: skip
