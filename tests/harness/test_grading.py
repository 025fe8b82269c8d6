"""Gold grading of real demo commits, flaky tests, and grading of patches, end to end."""

from __future__ import annotations

import json
import sys

import pytest

from appliance.harness.grading import classify_gold, grade_gold, grade_patch
from appliance.harness.results import gold_for
from appliance.harness.spec import commit_specs, is_test_path
from appliance.harness.testrun import TestRun
from appliance.packages import gitsafe
from tests.conftest import CALC_V2, PYPROJECT, TEST_V1, RepoBuilder, build
from tests.harness.conftest import ingest_package, make_home

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[2] / "repo_packages"))
from demo_source.make_demo_repo import TASK_COMMITS, TASK_COMMITS_WITH_TESTS  # noqa: E402

WHITESPACE = "Strip surrounding whitespace before parsing quantities"
FORMATTING = "Add a formatting module with fixed precision"
ADDITION = "Add addition and subtraction of quantities"
REFACTOR = next(s for s in TASK_COMMITS if s not in TASK_COMMITS_WITH_TESTS)


def spec_for(demo_home, subject: str):
    config, db = demo_home
    return next(s for s in commit_specs(config, db, "demo") if s.message.startswith(subject))


def test_gold_grading_finds_the_tests_a_commit_makes_pass(demo_home):
    config, db = demo_home
    result, reused = gold_for(config, db, spec_for(demo_home, WHITESPACE))
    assert not reused
    assert result.status == "ok" and result.usable
    assert result.fail_to_pass == ("tests/test_parser.py::test_ignores_surrounding_whitespace",)
    assert len(result.pass_to_pass) == 7
    assert "tests/test_parser.py::test_parses_value_and_unit" in result.pass_to_pass
    assert result.flaky == ()
    assert [run["side"] for run in result.runs] == ["before", "gold", "gold"]


def test_tests_of_a_module_that_cannot_import_before_the_commit_fail_to_pass(demo_home):
    config, db = demo_home
    result, _ = gold_for(config, db, spec_for(demo_home, FORMATTING))
    assert result.runs[0]["status"] == "collection_error"
    assert result.runs[0]["collection_errors"] == ["tests/test_formatting.py"]
    assert result.fail_to_pass == (
        "tests/test_formatting.py::test_formats_two_decimals_by_default",
        "tests/test_formatting.py::test_precision_can_be_chosen",
    )
    assert len(result.pass_to_pass) == 33


def test_several_new_tests(demo_home):
    config, db = demo_home
    result, _ = gold_for(config, db, spec_for(demo_home, ADDITION))
    assert set(result.fail_to_pass) == {
        "tests/test_quantity.py::test_adding_different_dimensions_fails",
        "tests/test_quantity.py::test_adds_quantities_in_the_left_unit",
        "tests/test_quantity.py::test_subtracts_quantities",
    }
    assert len(result.pass_to_pass) == 11


def test_a_commit_that_changes_no_tests_is_not_usable(demo_home):
    config, db = demo_home
    spec = spec_for(demo_home, REFACTOR)
    assert spec.test_files == ()
    result, _ = gold_for(config, db, spec)
    assert result.status == "ok" and not result.usable
    assert result.reason == "the commit changes no test file"


def test_stored_results_are_reused_until_forced(demo_home):
    config, db = demo_home
    spec = spec_for(demo_home, WHITESPACE)
    first, _ = gold_for(config, db, spec)
    again, reused = gold_for(config, db, spec)
    assert reused and again.fail_to_pass == first.fail_to_pass
    _, reused = gold_for(config, db, spec, force=True)
    assert not reused
    assert (
        db.execute("SELECT COUNT(*) FROM gold_results WHERE sha = ?", [spec.sha]).fetchone()[0] == 1
    )


def _run(outcomes, errors=()):
    return TestRun("collection_error" if errors else "ok", outcomes, tuple(errors))


def test_classify_gold_excludes_tests_whose_outcome_flips(demo_home):
    spec = spec_for(demo_home, WHITESPACE)
    before = _run({"t::a": "failed", "t::b": "passed", "t::c": "failed", "t::d": "passed"})
    gold = [
        _run({"t::a": "passed", "t::b": "passed", "t::c": "passed", "t::d": "passed"}),
        _run({"t::a": "passed", "t::b": "passed", "t::c": "failed", "t::d": "passed"}),
        _run({"t::a": "passed", "t::b": "passed", "t::c": "passed"}),
    ]
    status, usable, _, f2p, p2p, flaky = classify_gold(spec, before, gold)
    assert (status, usable) == ("ok", True)
    assert f2p == ("t::a",) and p2p == ("t::b",) and flaky == ("t::c", "t::d")


def test_a_broken_gold_run_is_an_infrastructure_failure(demo_home):
    spec = spec_for(demo_home, WHITESPACE)
    before = _run({"t::a": "failed"})
    status, usable, reason, *_ = classify_gold(spec, before, [TestRun("timeout", detail="slow")])
    assert (status, usable) == ("infra", False) and "timeout" in reason


def test_a_module_that_does_not_import_at_the_commit_is_left_out(demo_home):
    """As a test module reading data from a git submodule the package cannot hold."""
    spec = spec_for(demo_home, WHITESPACE)
    before = _run({"t::a": "failed", "t::b": "passed"}, ["tests/test_submodule_data.py"])
    gold = [_run({"t::a": "passed", "t::b": "passed"}, ["tests/test_submodule_data.py"])] * 2
    status, usable, reason, f2p, p2p, _ = classify_gold(spec, before, gold)
    assert (status, usable, f2p, p2p) == ("ok", True, ("t::a",), ("t::b",))
    assert "1 module(s) that do not import left out: tests/test_submodule_data.py" in reason


def test_the_commits_own_test_module_failing_to_import_is_not_graded(demo_home):
    spec = spec_for(demo_home, WHITESPACE)
    own = spec.test_files[0]
    before = _run({"t::a": "failed"})
    status, usable, reason, *_ = classify_gold(spec, before, [_run({"t::b": "passed"}, [own])])
    assert (status, usable) == ("infra", False)
    assert reason == f"the commit's own test module {own} does not import at the commit"
    wobbly = [_run({"t::b": "passed"}, ["tests/x.py"]), _run({"t::b": "passed"})]
    status, _, reason, *_ = classify_gold(spec, before, wobbly)
    assert (status, reason) == ("infra", "the gold runs disagree on which modules import")


SUB_TEST = "from calc import sub\n\n\ndef test_sub():\n    assert sub(3, 2) == 1\n"
COIN = "import os\n\n\ndef test_coin():\n    assert os.urandom(1)[0] % 2\n"


def test_a_planted_flaky_test_is_detected_and_excluded(tmp_path, monkeypatch, wheelhouse):
    repo = RepoBuilder(tmp_path / "flaky-src")
    repo.commit(
        "Create calculator with addition",
        {"pyproject.toml": PYPROJECT, "src/calc.py": "def add(a, b):\n    return a + b\n",
         "tests/test_calc.py": TEST_V1},
    )  # fmt: skip
    repo.commit(
        "Add subtraction and a coin-flip test",
        {"src/calc.py": CALC_V2, "tests/test_sub.py": SUB_TEST, "tests/test_coin.py": COIN},
    )
    package = build(repo, tmp_path / "flaky-pkg", wheelhouse, name="flaky", version="1.0").path
    # Twelve gold runs: a fair coin gives the same side every time with p = 2**-11.
    config, db = make_home(tmp_path / "home", monkeypatch, "[harness]\ngold_runs = 12\n")
    ingest_package(config, db, package)
    (spec,) = commit_specs(config, db, "flaky")
    result = grade_gold(config, spec)
    assert result.flaky == ("tests/test_coin.py::test_coin",)
    assert result.fail_to_pass == ("tests/test_sub.py::test_sub",)
    assert result.pass_to_pass == ("tests/test_calc.py::test_add",)
    assert result.usable


# --- grading patches -----------------------------------------------------------------


def commit_diff(spec, tests: bool = False) -> str:
    """The commit's own change to its source files (or test files)."""
    names = gitsafe.git(["diff", "--name-only", spec.parent, spec.sha], git_dir=spec.repo)
    paths = [p for p in names.decode().split() if is_test_path(p) == tests]
    return gitsafe.git(["diff", spec.parent, spec.sha, "--", *paths], git_dir=spec.repo).decode()


@pytest.fixture(scope="module")
def whitespace(demo_home):
    config, db = demo_home
    spec = spec_for(demo_home, WHITESPACE)
    return spec, gold_for(config, db, spec)[0]


def test_the_commits_own_change_resolves_the_task(demo_home, whitespace):
    spec, gold = whitespace
    verdict = grade_patch(demo_home[0], spec, gold, "diff", commit_diff(spec))
    assert verdict.verdict == "resolved", verdict
    assert verdict.fail_to_pass == {gold.fail_to_pass[0]: "passed"}
    assert verdict.pass_to_pass_broken == {}
    assert verdict.changed and "diff --git" in verdict.diff


def test_no_change_fails_the_new_tests(demo_home, whitespace):
    spec, gold = whitespace
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", [])
    assert verdict.verdict == "failed"
    assert verdict.fail_to_pass == {gold.fail_to_pass[0]: "failed"}
    assert "1 of 1 FAIL_TO_PASS do not pass" in verdict.reason


def test_an_edit_that_does_not_apply(demo_home, whitespace):
    spec, gold = whitespace
    edits = [{"path": "src/metrica/parser.py", "search": "no such text", "replace": "x"}]
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", edits)
    assert verdict.verdict == "not_applied"
    assert "not found" in verdict.reason and "src/metrica/parser.py" in verdict.reason
    bad_diff = commit_diff(spec).replace("\n ", "\n ZZZ", 1)
    verdict = grade_patch(demo_home[0], spec, gold, "diff", bad_diff)
    assert verdict.verdict == "not_applied", verdict


def test_a_patch_that_fixes_the_task_but_breaks_a_pass_to_pass_test(demo_home, whitespace):
    spec, gold = whitespace
    config = demo_home[0]
    # The real fix, plus a change that breaks parsing of a unit the old tests use.
    fix = commit_diff(spec)
    verdict = grade_patch(config, spec, gold, "diff", fix)
    assert verdict.resolved
    wt_source = gitsafe.git(["show", f"{spec.sha}:src/metrica/units.py"], git_dir=spec.repo)
    assert b'"km"' in wt_source or b"'km'" in wt_source
    quote = '"km"' if b'"km"' in wt_source else "'km'"
    breaking = [
        {"path": "src/metrica/units.py", "search": quote, "replace": quote[0] + "kmx" + quote[0]}
    ]
    from appliance.harness.checkout import worktree
    from appliance.harness.edits import apply_edits, apply_unified_diff, diff_of

    with worktree(config, spec.repo, spec.parent) as work:
        apply_unified_diff(work / "repo", fix)
        apply_edits(work / "repo", "search_replace", breaking)
        both = diff_of(work / "repo")
    verdict = grade_patch(config, spec, gold, "diff", both)
    assert verdict.verdict == "failed"
    assert verdict.fail_to_pass == {gold.fail_to_pass[0]: "passed"}
    assert (
        "tests/test_quantity.py::test_converts_kilometres_to_metres" in verdict.pass_to_pass_broken
    )
    assert "PASS_TO_PASS broke" in verdict.reason


def test_a_patch_cannot_grade_itself_by_changing_the_tests(demo_home, whitespace):
    spec, gold = whitespace
    (test_file,) = spec.test_files
    cheat = [
        {"path": test_file, "search": "def test_parses_value_and_unit",
         "replace": "def _disabled"},
        {"path": "tests/conftest.py", "search": "", "replace": "collect_ignore = ['tests']\n"},
    ]  # fmt: skip
    verdict = grade_patch(demo_home[0], spec, gold, "search_replace", cheat)
    assert verdict.verdict == "failed", verdict
    assert "were ignored" in verdict.reason


def test_cli_check_and_run(demo_home, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from appliance.cli import cli

    config, _ = demo_home
    monkeypatch.setenv("FORGE_HOME", str(config.home))
    spec = spec_for(demo_home, WHITESPACE)
    runner = CliRunner()
    out = runner.invoke(cli, ["harness", "check", "demo", "--commit", spec.sha[:10], "--json"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)
    assert {k: row[k] for k in ("sha", "fail_to_pass", "pass_to_pass", "flaky", "usable")} == {
        "sha": spec.sha, "fail_to_pass": 1, "pass_to_pass": 7, "flaky": 0, "usable": True,
    }  # fmt: skip
    patch = tmp_path / "fix.diff"
    patch.write_text(commit_diff(spec))
    out = runner.invoke(
        cli, ["harness", "run", "demo", "--commit", spec.sha, "--patch", str(patch), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["verdict"] == "resolved"
    patch.write_text(
        "diff --git a/notes.txt b/notes.txt\nnew file mode 100644\n--- /dev/null\n"
        "+++ b/notes.txt\n@@ -0,0 +1 @@\n+not a fix\n"
    )
    out = runner.invoke(
        cli, ["harness", "run", "demo", "--commit", spec.sha, "--patch", str(patch)]
    )
    assert out.exit_code == 3 and "failed" in out.output
    refactor = spec_for(demo_home, REFACTOR).sha
    out = runner.invoke(
        cli, ["harness", "run", "demo", "--commit", refactor, "--patch", str(patch)]
    )
    assert out.exit_code == 2 and "not a usable task" in out.output
    out = runner.invoke(cli, ["status", "--json"])
    (item,) = json.loads(out.output)["corpus"]["items"]
    assert item["graded"] >= 1 and item["usable"] >= 1
    out = runner.invoke(cli, ["harness", "check", "nosuch"])
    assert out.exit_code == 2 and "no package named 'nosuch'" in out.output
    out = runner.invoke(cli, ["harness", "check", "demo", "--commit", "ffffffff"])
    assert out.exit_code == 2 and "matches no task commit" in out.output
    out = runner.invoke(cli, ["harness", "run", "demo", "--commit", spec.sha, "--patch", "/nope"])
    assert out.exit_code == 2 and "does not exist" in out.output


def test_environments_are_reused_across_commits(demo_home):
    from appliance.harness.envs import MARKER, ensure_env

    config, db = demo_home
    first, second = commit_specs(config, db, "demo")[:2]
    assert first.env_key == second.env_key
    ensure_env(config, first)
    again = ensure_env(config, second)
    assert not again.built and (again.path / MARKER).is_file()


def test_a_broken_environment_is_an_infrastructure_failure(demo_home, whitespace):
    import dataclasses

    config = demo_home[0]
    spec, gold = whitespace
    broken = dataclasses.replace(spec, requirements=("no-such-project==1.0",))
    result = grade_gold(config, broken)
    assert result.status == "infra" and not result.usable
    assert result.runs[0]["status"] == "env_failed"
    assert "cannot be built" in result.reason
    verdict = grade_patch(config, broken, gold, "diff", commit_diff(spec))
    assert verdict.verdict == "infra"
    assert not (config.dir("envs") / broken.env_key / "bin").exists()


def test_an_unavailable_sandbox_backend_refuses_to_grade(demo_home, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from appliance.cli import cli

    config, db = demo_home
    toml = tmp_path / "forge.toml"
    toml.write_text('[sandbox]\nbackend = "docker"\ndocker_image = "forge-test:1"\n')
    monkeypatch.setenv("FORGE_HOME", str(config.home))
    monkeypatch.setenv("FORGE_CONFIG", str(toml))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    before = db.execute("SELECT COUNT(*) FROM gold_results").fetchone()[0]
    out = CliRunner().invoke(cli, ["harness", "check", "demo", "--force", "--limit", "1"])
    assert out.exit_code == 1, out.output
    assert "docker engine is unreachable" in out.output
    assert db.execute("SELECT COUNT(*) FROM gold_results").fetchone()[0] == before


def test_an_infrastructure_failure_is_graded_again_not_reused(demo_home, whitespace):
    import dataclasses

    config, db = demo_home
    spec, _ = whitespace
    broken = dataclasses.replace(spec, requirements=("no-such-project==1.0",))
    first, reused = gold_for(config, db, broken, force=True)  # stored: an infra failure
    assert first.status == "infra" and not reused
    again, reused = gold_for(config, db, broken)
    assert again.status == "infra" and not reused  # what failed may work now: try again
    good, reused = gold_for(config, db, spec)
    assert good.status == "ok" and good.usable and not reused
    assert gold_for(config, db, spec)[1]  # a real result is reused


def test_a_commit_whose_tree_is_unsafe_is_unusable_not_a_crash(demo_home, whitespace, tmp_path):
    """A package ingested before validation refused unsafe trees: its commit with a `.git`
    tree entry grades as an unusable task with the reason, and a patch on it as infra."""
    import dataclasses

    from tests.conftest import git as git_in

    def git(*args: str, stdin: str | None = None) -> str:
        return git_in(src.path, *args, stdin=stdin)

    src = RepoBuilder(tmp_path / "src")
    head = src.commit("Start", {"calc.py": "x = 1\n", "tests/test_calc.py": TEST_V1})
    blob = git("hash-object", "-w", "--stdin", stdin="[core]\n\tfsmonitor = true\n")
    inner = git("mktree", stdin=f"100644 blob {blob}\tconfig\n")
    tree = git("mktree", stdin=git("ls-tree", head) + f"\n040000 tree {inner}\t.git\n")
    sha = git("commit-tree", tree, "-p", head, "-m", "hostile")
    bare = tmp_path / "bare.git"
    git("clone", "-q", "--bare", str(src.path), str(bare))
    git("--git-dir", str(bare), "update-ref", "refs/heads/main", sha)
    config, _ = demo_home
    demo_spec, demo_gold = whitespace

    result = grade_gold(config, dataclasses.replace(demo_spec, repo=bare, sha=sha, parent=head))
    assert (result.status, result.usable) == ("ok", False)
    assert "cannot be checked out" in result.reason and ".git" in result.reason
    on_unsafe_parent = dataclasses.replace(demo_spec, repo=bare, sha=sha, parent=sha)
    verdict = grade_patch(config, on_unsafe_parent, demo_gold, "diff", "")
    assert verdict.verdict == "infra" and "cannot be checked out" in verdict.reason
