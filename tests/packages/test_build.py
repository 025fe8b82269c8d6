"""`forge package build`: from a path or a URL, filters, limits, nothing left on failure."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from appliance.errors import PackageBuildError
from tests.conftest import CALC_V2, build


def test_build_from_a_git_url(calc_repo, wheelhouse, tmp_path):
    url = f"file://{calc_repo.path}"
    from appliance.packages.build import BuildOptions, build_package
    from tests.conftest import PYTEST_PINS

    result = build_package(
        BuildOptions(
            source=url, output=tmp_path / "pkg", requirements=PYTEST_PINS, find_links=wheelhouse
        ),
        cache_dir=tmp_path / "cache",
    )
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["name"] == "calc-src"
    assert manifest["source"]["url"] == url
    assert manifest["source"]["branch"] == "main"
    assert [c["message"].strip() for c in manifest["commits"]] == [
        "Add subtraction to the calculator"
    ]


def test_max_commits_keeps_the_newest_and_since_skips_older(calc_repo, wheelhouse, tmp_path):
    calc_repo.commit(
        "Add multiplication to the calculator",
        {"src/calc.py": CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n"},
    )
    newest = build(calc_repo, tmp_path / "a", wheelhouse, max_commits=1)
    assert [c.message.strip() for c in newest.manifest.commits] == [
        "Add multiplication to the calculator"
    ]
    # The repository is complete even when fewer commits are listed: parents stay valid.
    since = build(calc_repo, tmp_path / "b", wheelhouse, since=datetime(2024, 1, 1, 2, 30))
    assert [c.message.strip() for c in since.manifest.commits] == [
        "Add multiplication to the calculator"
    ]


def test_no_usable_commit_is_an_error_and_leaves_nothing(calc_repo, wheelhouse, tmp_path):
    with pytest.raises(PackageBuildError, match="no commit .* passes the filters"):
        build(calc_repo, tmp_path / "out", wheelhouse, since=datetime(2030, 1, 1))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out-build-")] == []


def test_unresolvable_requirement_is_an_error_and_leaves_nothing(calc_repo, wheelhouse, tmp_path):
    from appliance.packages.build import BuildOptions, build_package

    with pytest.raises(PackageBuildError, match="do not resolve"):
        build_package(
            BuildOptions(
                source=str(calc_repo.path),
                output=tmp_path / "out",
                requirements=["no-such-project==1.0"],
                find_links=wheelhouse,
            ),
            cache_dir=tmp_path / "cache",
        )
    assert not (tmp_path / "out").exists()


def test_built_repository_is_bare_clean_and_packed(calc_package):
    repo = calc_package / "repo"
    assert not (repo / "hooks").exists()
    assert "bare = true" in (repo / "config").read_text()
    assert list((repo / "objects" / "pack").glob("*.pack"))
    loose = [p for p in (repo / "objects").iterdir() if len(p.name) == 2]
    assert loose == []


def test_more_commits_than_the_limit_is_rejected(calc_repo, wheelhouse, tmp_path, monkeypatch):
    from appliance.config import load_config
    from appliance.packages.validate import validate

    calc_repo.commit(
        "Add multiplication to the calculator",
        {"src/calc.py": CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n"},
    )
    pkg = build(calc_repo, tmp_path / "pkg", wheelhouse).path
    home = tmp_path / "home"
    home.mkdir()
    (home / "forge.toml").write_text("[packages]\nmax_commits = 1\n")
    monkeypatch.setenv("FORGE_HOME", str(home))
    report = validate(pkg, load_config())
    assert not report.ok
    assert [p.rule for p in report.problems] == ["too-many-commits"]
    assert "2 commits; the limit is 1" in report.problems[0].message
