"""The commit filters of `forge package build`, one reason each."""

from __future__ import annotations

import pytest

from appliance.packages.mining import CandidateCommit, filter_commits, reject_reason

HUMAN = "Ada Tester <ada@tests.invalid>"


def commit(
    message="Fix rounding of negative amounts",
    files=(("src/a.py", 3, 1), ("tests/test_a.py", 4, 0)),
    parents=("p",),
    author=HUMAN,
) -> CandidateCommit:
    return CandidateCommit("s", tuple(parents), author, message, tuple(files))


@pytest.mark.parametrize(
    "candidate, reason",
    [
        (commit(), None),
        (commit(parents=()), "root"),
        (commit(parents=("a", "b")), "merge"),
        (
            commit(author="dependabot[bot] <49699333+dependabot[bot]@users.noreply.github.com>"),
            "bot",
        ),
        (commit(author="renovate-bot <bot@renovateapp.com>"), "bot"),
        (commit(message="wip"), "message"),
        (commit(message="misc fixes here"), "message"),
        (commit(message="Update the parser code"), "message"),
        (commit(message="Bump version to 2.0"), "message"),
        (commit(message="Release 1.2.0 today"), "message"),
        (commit(message="Fixed the parser bug"), "message"),
        (commit(message="Fix parser"), "message"),
        (commit(message="feat: allow extension blocks"), None),  # marko's conventional commits
        (commit(message="fix(parser)!: tables in lists"), None),
        (commit(message="hooks: fix plugins registering plugins"), None),  # pluggy's scopes
        (commit(message="NEW: Print line and column"), None),  # tomli
        (commit(message="chore: update the deps"), "message"),
        (commit(message="release: 2.0 is out"), "message"),
        (commit(message="docs: the parser section"), "message"),
        (commit(message="Render inline tables in O(n)"), None),  # tomlkit
        (commit(files=(("README.md", 10, 2), ("docs/conf.py", 1, 1))), "docs-or-ci-only"),
        (commit(files=((".github/workflows/ci.yml", 10, 0),)), "docs-or-ci-only"),
        (commit(files=(("setup.cfg", 1, 1),)), "no-python"),
        (commit(files=tuple((f"src/m{i}.py", 1, 0) for i in range(6))), "too-many-files"),
        (commit(files=(("src/a.py", 150, 50),)), "too-many-lines"),
        (commit(files=(("src/a.py", 140, 49), ("tests/test_a.py", 10, 0))), None),
        (commit(files=(("src/a.py", 3, 1),)), "no-test-change"),
        (commit(files=(("src/a.py", 3, 1), ("docs/index.md", 3, 0))), "no-test-change"),
        (commit(files=(("tests/test_a.py", 3, 1),)), "tests-only"),
        (commit(files=(("tests/conftest.py", 3, 1), ("docs/conf.py", 1, 0))), "tests-only"),
        (commit(files=(("pkg/core.py", 3, 1), ("pkg/core_test.py", 3, 0))), None),
        (commit(files=(("src/a.py", 3, 1), ("test/helpers.py", 3, 0))), None),
    ],
)
def test_each_filter(candidate, reason):
    assert reject_reason(candidate) == reason


def test_filter_counts_every_removal():
    kept, removed = filter_commits([commit(), commit(message="wip"), commit(parents=())])
    assert len(kept) == 1
    assert removed["message"] == 1 and removed["root"] == 1
    assert sum(removed.values()) == 2


def test_any_commit_keeps_code_or_tests_alone():
    code_only = commit(files=(("src/a.py", 3, 1),))
    tests_only = commit(files=(("tests/test_a.py", 3, 1),))
    assert reject_reason(code_only, any_commit=True) is None
    assert reject_reason(tests_only, any_commit=True) is None
    kept, removed = filter_commits([code_only, tests_only, commit()])
    assert len(kept) == 1
    assert removed["no-test-change"] == 1 and removed["tests-only"] == 1
    kept, removed = filter_commits([code_only, tests_only, commit()], any_commit=True)
    assert len(kept) == 3 and sum(removed.values()) == 0


def test_test_data_is_a_test_change_as_grading_sees_it():
    """Mining and grading share one definition of a test file: a fix whose new case is a
    data file under tests/ (as tomli's are) changes the tests."""
    from appliance.harness.spec import is_test_path

    data_case = (("src/a.py", 3, 1), ("tests/data/valid/case.toml", 4, 0))
    assert reject_reason(commit(files=data_case)) is None
    assert is_test_path("tests/data/valid/case.toml")
    only_data = (("tests/data/valid/case.toml", 4, 0), ("tests/test_a.py", 1, 0))
    assert reject_reason(commit(files=only_data)) == "tests-only"
