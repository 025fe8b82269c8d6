"""The shipped demo package: built by the real builder, valid, and ingestible offline."""

from __future__ import annotations

import importlib.util
import json

import pytest

from appliance.packages.ingest import ingest
from appliance.packages.split import no_rows
from appliance.packages.validate import validate
from tests.conftest import ROOT


def _build_demo_module():
    spec = importlib.util.spec_from_file_location(
        "build_demo", ROOT / "repo_packages" / "build_demo.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_package(tmp_path_factory, wheelhouse):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return _build_demo_module().build(out, force=True, wheels=wheelhouse)


def test_demo_build_is_deterministic_and_filters_commits(demo_package, tmp_path, wheelhouse):
    manifest = json.loads((demo_package / "manifest.json").read_text())
    assert manifest["name"] == "demo"
    assert len(manifest["commits"]) >= 25
    again = _build_demo_module().build(tmp_path / "demo", force=True, wheels=wheelhouse)
    assert (again / "manifest.json").read_bytes() == (demo_package / "manifest.json").read_bytes()


def test_demo_manifest_keeps_exactly_the_task_commits(demo_package):
    """PyDriller mining + the filters keep the commits the demo history labels as tasks."""
    spec = importlib.util.spec_from_file_location(
        "make_demo_repo", ROOT / "repo_packages" / "demo_source" / "make_demo_repo.py"
    )
    history = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(history)
    manifest = json.loads((demo_package / "manifest.json").read_text())
    subjects = [c["message"].splitlines()[0] for c in manifest["commits"]]
    assert subjects == list(history.TASK_COMMITS)
    for entry in manifest["commits"]:
        assert 1 <= len(entry["files"]) <= 5
        assert sum(f["added"] + f["deleted"] for f in entry["files"]) < 200


def test_demo_package_validates(demo_package, forge_home):
    report = validate(demo_package, forge_home)
    assert report.ok, [p.line() for p in report.problems]


def test_demo_package_ingests_once(demo_package, forge_home, db):
    [result] = ingest(forge_home, db, demo_package, keep=True, trained_rows=no_rows)
    assert result.outcome == "accepted", result.reasons
    commits = db.execute("SELECT COUNT(*) FROM commits").fetchone()[0]
    assert commits == len(json.loads((demo_package / "manifest.json").read_text())["commits"])
    [again] = ingest(forge_home, db, demo_package, keep=True, trained_rows=no_rows)
    assert again.outcome == "duplicate"
    assert db.execute("SELECT COUNT(*) FROM packages").fetchone()[0] == 1


def test_installed_demo_package_validates(forge_home):
    """install.sh builds repo_packages/demo/; `forge package validate` passes on it."""
    installed = ROOT / "repo_packages" / "demo"
    if not (installed / "manifest.json").is_file():
        pytest.fail("repo_packages/demo/ is missing: run ./install.sh (it builds the demo)")
    report = validate(installed, forge_home)
    assert report.ok, [p.line() for p in report.problems]
