"""Manifest schema 2: one pinned requirement set per distinct declaration.

Commits that declare the same dependencies share a set; older commits that declare
others get a set of their own (up to --max-requirement-sets), each graded in its own
environment. Version 1 manifests (one `requirements` list) are still read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.packages.manifest import ManifestError, parse_manifest
from tests.conftest import CALC_V1, CALC_V2, TEST_V1, RepoBuilder
from tests.packages.conftest import build_from, make_wheel

# No [build-system]: what is tested here is the dependency environment, not the install.
PYPROJECT = """\
[project]
name = "calc"
version = "0.1"
dependencies = [{deps}]

[dependency-groups]
test = ["pytest>=8"]

[tool.pytest.ini_options]
pythonpath = ["src"]
testpaths = ["tests"]
"""


def _test_using(name: str, expr: str, dep_version: str) -> str:
    """A test of `expr` that also checks which tiny-dep the environment holds."""
    return (
        f"from importlib.metadata import version\n\nfrom calc import {name}\n\n\n"
        f"def test_{name}():\n    assert {expr}\n"
        f'    assert version("tiny-dep") == "{dep_version}"\n'
    )


@pytest.fixture
def dep_links(tmp_path, wheelhouse) -> Path:
    """The pytest wheels and two versions of tiny-dep, as a --find-links folder."""
    folder = tmp_path / "links"
    shutil.copytree(wheelhouse, folder)
    make_wheel(folder, "tiny-dep", "0.5")
    make_wheel(folder, "tiny-dep", "1.0")
    return folder


def two_eras(path: Path) -> RepoBuilder:
    """Older commits declare tiny-dep<1, newer ones tiny-dep>=1; every task's test checks
    the tiny-dep it runs with."""
    mul = CALC_V2 + "\n\ndef mul(a, b):\n    return a * b\n"
    repo = RepoBuilder(path)
    repo.commit(
        "Create calculator with addition",
        {
            "pyproject.toml": PYPROJECT.format(deps='"tiny-dep<1"'),
            "src/calc/__init__.py": CALC_V1,
            "tests/test_calc.py": TEST_V1,
        },
    )
    repo.commit(
        "Add subtraction to the calculator",
        {
            "src/calc/__init__.py": CALC_V2,
            "tests/test_sub.py": _test_using("sub", "sub(3, 2) == 1", "0.5"),
        },
    )
    repo.commit(
        "Add multiplication with the new tiny-dep",
        {
            "pyproject.toml": PYPROJECT.format(deps='"tiny-dep>=1"'),
            "src/calc/__init__.py": mul,
            "tests/test_sub.py": _test_using("sub", "sub(3, 2) == 1", "1.0"),
            "tests/test_mul.py": _test_using("mul", "mul(2, 3) == 6", "1.0"),
        },
    )
    repo.commit(
        "Add division to the calculator",
        {
            "src/calc/__init__.py": mul + "\n\ndef div(a, b):\n    return a / b\n",
            "tests/test_div.py": _test_using("div", "div(6, 3) == 2", "1.0"),
        },
    )
    return repo


def test_two_declarations_build_two_sets_and_each_grades_in_its_own_environment(
    tmp_path, dep_links, forge_home, db
):
    from appliance.harness.envs import ensure_env
    from appliance.harness.grading import grade_gold
    from appliance.harness.spec import commit_specs
    from appliance.packages.ingest import ingest_one
    from appliance.packages.split import no_rows
    from appliance.packages.validate import validate

    repo = two_eras(tmp_path / "calc")
    result = build_from(str(repo.path), tmp_path / "pkg", dep_links, name="eras", version="1")
    manifest = result.manifest
    assert manifest.schema_version == 2
    assert [c.message.strip() for c in manifest.commits] == [
        "Add subtraction to the calculator",
        "Add multiplication with the new tiny-dep",
        "Add division to the calculator",
    ]
    assert [c.requirement_set for c in manifest.commits] == [1, 0, 0]  # set 0: the newest's
    assert "tiny-dep==1.0" in manifest.requirement_sets[0]
    assert "tiny-dep==0.5" in manifest.requirement_sets[1]
    assert "tiny-dep==0.5" in manifest.requirements_of(manifest.commits[0].sha)
    assert result.removed["declares-other-dependencies"] == 0
    assert {"tiny_dep-0.5-py3-none-any.whl", "tiny_dep-1.0-py3-none-any.whl"} <= set(
        manifest.wheels
    )
    assert sorted(p.name for p in (result.path / "packages").iterdir()) == sorted(manifest.wheels)

    report = validate(result.path, forge_home)
    assert report.ok, report.to_dict()
    assert (
        ingest_one(forge_home, db, result.path, keep=True, trained_rows=no_rows).outcome
        == "accepted"
    )
    specs = commit_specs(forge_home, db, "eras")
    assert [
        ("tiny-dep==0.5" in s.requirements, "tiny-dep==1.0" in s.requirements) for s in specs
    ] == [
        (True, False),
        (False, True),
        (False, True),
    ]
    assert specs[1].env_key == specs[2].env_key != specs[0].env_key
    # Each era's test asserts the tiny-dep it sees: passing means the right environment.
    for spec in (specs[0], specs[2]):
        gold = grade_gold(forge_home, spec, runs=1)
        assert gold.usable, gold.to_dict()
    envs = sorted(p.name for p in forge_home.dir("envs").iterdir() if not p.name.startswith("."))
    assert envs == sorted({specs[0].env_key, specs[2].env_key})
    assert not ensure_env(forge_home, specs[1]).built  # the newest set's, already there


def test_the_set_cap_drops_commits_and_the_cli_reports_the_sets(tmp_path, dep_links, forge_home):
    from click.testing import CliRunner

    from appliance.cli import cli

    repo = two_eras(tmp_path / "calc")
    args = ["package", "build", str(repo.path), "--find-links", str(dep_links), "--json"]
    out = CliRunner().invoke(
        cli, [*args, "-o", str(tmp_path / "one"), "--max-requirement-sets", "1"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["kept"] == 2 and data["removed"]["declares-other-dependencies"] == 1
    assert [s["commits"] for s in data["requirement_sets"]] == [2]
    out = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "two")])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["kept"] == 3 and [s["commits"] for s in data["requirement_sets"]] == [2, 1]
    out = CliRunner().invoke(cli, [*args[:-1], "-o", str(tmp_path / "text")])
    assert out.exit_code == 0, out.output
    assert "2 pinned requirement sets" in out.output
    assert "set 1: " in out.output and "used by 1 commit\n" in out.output


def test_validation_resolves_every_set_and_names_the_one_that_fails(
    tmp_path, dep_links, forge_home
):
    from appliance.packages.validate import validate

    repo = two_eras(tmp_path / "calc")
    package = build_from(str(repo.path), tmp_path / "pkg", dep_links).path
    (package / "packages" / "tiny_dep-0.5-py3-none-any.whl").unlink()  # set 1's alone
    data = json.loads((package / "manifest.json").read_text())
    del data["wheels"]["tiny_dep-0.5-py3-none-any.whl"]
    (package / "manifest.json").write_text(json.dumps(data, indent=2))
    report = validate(package, forge_home, dry_run=False)
    [problem] = report.problems
    assert problem.rule == "wheel-missing"
    assert problem.message.startswith(
        "requirement set 1 (used by 1 commit) does not resolve from packages/ alone"
    )


def test_an_older_declaration_that_does_not_resolve_is_dropped(tmp_path, dep_links):
    older = RepoBuilder(tmp_path / "older")
    older.commit(
        "Create calculator with addition",
        {
            "pyproject.toml": PYPROJECT.format(deps='"tiny-dep<0.1"'),
            "src/calc/__init__.py": CALC_V1,
            "tests/test_calc.py": TEST_V1,
        },
    )
    older.commit(
        "Add subtraction to the calculator",
        {
            "src/calc/__init__.py": CALC_V2,
            "tests/test_sub.py": _test_using("sub", "sub(3, 2) == 1", "0.5"),
        },
    )
    older.commit(
        "Move to the new tiny-dep release",
        {
            "pyproject.toml": PYPROJECT.format(deps='"tiny-dep>=1"'),
            "src/calc/__init__.py": CALC_V2 + "\n\ndef neg(a):\n    return -a\n",
            "tests/test_neg.py": "from calc import neg\n\n\ndef test_neg():\n"
            "    assert neg(1) == -1\n",
        },
    )
    result = build_from(str(older.path), tmp_path / "pkg", dep_links)
    assert [c.message.strip() for c in result.manifest.commits] == [
        "Move to the new tiny-dep release"
    ]
    assert result.removed["unresolvable-dependencies"] == 1
    assert len(result.manifest.requirement_sets) == 1


# --- The manifest itself ------------------------------------------------------------------


def _v2(**changes) -> dict:
    commit = {
        "sha": "a" * 40,
        "parent": "b" * 40,
        "message": "Add subtraction",
        "files": [{"path": "calc.py", "added": 1, "deleted": 0}],
        "requirement_set": 0,
    }
    data = {
        "schema_version": 2,
        "name": "calc",
        "version": "1",
        "requirement_sets": [["pytest==9.2.0"]],
        "test_command": ["pytest", "-q"],
        "test_timeout_s": 60,
        "commits": [commit],
        "wheels": {},
    }
    data.update(changes)
    return data


def _parse(data: dict):
    return parse_manifest(json.dumps(data).encode())


def _problems(data: dict) -> str:
    with pytest.raises(ManifestError) as caught:
        _parse(data)
    return "; ".join(caught.value.problems)


def test_a_commit_pointing_at_a_missing_set_is_refused():
    data = _v2()
    data["commits"][0]["requirement_set"] = 3
    assert "uses requirement set 3, which does not exist (requirement_sets holds 1)" in (
        _problems(data)
    )


def test_an_unpinned_requirement_in_a_set_is_refused_naming_the_set():
    message = _problems(_v2(requirement_sets=[["pytest==9.2.0"], ["requests>=2"]]))
    assert "requirement_sets.1.0" in message and "is not pinned" in message


def test_a_set_no_commit_uses_and_a_project_twice_are_refused():
    assert "requirement set 1 is used by no commit" in _problems(
        _v2(requirement_sets=[["pytest==9.2.0"], ["pytest==8.0"]])
    )
    assert "requirement set 0 names a project more than once" in _problems(
        _v2(requirement_sets=[["pytest==9.2.0", "PyTest==8.0"]])
    )


def test_schema_1_fields_in_schema_2_and_unknown_versions_are_refused():
    assert "requirements" in _problems(_v2(requirements=["pytest==9.2.0"]))
    assert "unknown schema_version 3; this Forge reads schema_version 1 or 2" in _problems(
        _v2(schema_version=3)
    )
    assert "unknown schema_version True" in _problems(_v2(schema_version=True))


def test_a_version_1_manifest_reads_as_one_set_every_commit_uses():
    data = _v2(schema_version=1, requirements=["pytest==9.2.0", "tiny-dep==1.0"])
    del data["requirement_sets"]
    del data["commits"][0]["requirement_set"]
    manifest = _parse(data)
    assert manifest.requirement_sets == [["pytest==9.2.0", "tiny-dep==1.0"]]
    assert manifest.requirements_of("a" * 40) == ("pytest==9.2.0", "tiny-dep==1.0")
    data["commits"][0]["requirement_set"] = 0  # not a schema 1 field
    assert "requirement_set" in _problems(data)
    data = _v2(schema_version=1, requirements=["requests>=2"])
    del data["requirement_sets"]
    del data["commits"][0]["requirement_set"]
    assert "is not pinned" in _problems(data)


def test_a_version_1_package_validates_ingests_and_gives_its_pins(calc_package, forge_home, db):
    from appliance.harness.spec import commit_specs
    from appliance.packages.ingest import ingest_one
    from appliance.packages.split import no_rows
    from appliance.packages.validate import validate

    data = json.loads((calc_package / "manifest.json").read_text())
    [pins] = data.pop("requirement_sets")
    data["schema_version"], data["requirements"] = 1, pins
    for commit in data["commits"]:
        del commit["requirement_set"]
    (calc_package / "manifest.json").write_text(json.dumps(data, indent=2))
    report = validate(calc_package, forge_home)
    assert report.ok, report.to_dict()
    assert (
        ingest_one(forge_home, db, calc_package, keep=True, trained_rows=no_rows).outcome
        == "accepted"
    )
    [spec] = commit_specs(forge_home, db, "calc")
    assert spec.requirements == tuple(pins)


def test_rows_ingested_before_the_migration_get_one_set(tmp_path):
    from appliance.store.db import connect
    from appliance.store.migrations import MIGRATIONS, migrate

    db = connect(tmp_path / "old.db", migrate=False)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    names = [fn.__name__ for fn in MIGRATIONS]
    for fn in MIGRATIONS[: names.index("m013_requirement_sets")]:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, '')", [fn.__name__])
    db.execute(
        "INSERT INTO packages (name, version, manifest_sha256, path, test_command, "
        "test_timeout_s, requirements, ingested_at) VALUES "
        "('calc', '1', 'x', 'corpus/calc@1', '[\"pytest\"]', 60, '[\"pytest==9.2.0\"]', '')"
    )
    db.execute(
        "INSERT INTO commits (package_id, sha, parent, message, files, lines_added, "
        "lines_deleted) VALUES (1, 'a', 'b', 'm', '[]', 1, 0)"
    )
    assert "m013_requirement_sets" in migrate(db)
    [row] = db.query("SELECT requirement_sets FROM packages")
    assert json.loads(row["requirement_sets"]) == [["pytest==9.2.0"]]
    [commit] = db.query("SELECT requirement_set FROM commits")
    assert commit["requirement_set"] == 0
