"""The commit filters of `forge package build`, one reason each."""

from __future__ import annotations

import pytest

from appliance.packages.mining import CandidateCommit, filter_commits, reject_reason

HUMAN = "Ada Tester <ada@tests.invalid>"


def commit(
    message="Fix rounding of negative amounts",
    files=(("src/a.py", 3, 1),),
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
        (commit(files=(("README.md", 10, 2), ("docs/conf.py", 1, 1))), "docs-or-ci-only"),
        (commit(files=((".github/workflows/ci.yml", 10, 0),)), "docs-or-ci-only"),
        (commit(files=(("setup.cfg", 1, 1),)), "no-python"),
        (commit(files=tuple((f"src/m{i}.py", 1, 0) for i in range(6))), "too-many-files"),
        (commit(files=(("src/a.py", 150, 50),)), "too-many-lines"),
        (commit(files=(("src/a.py", 150, 49),)), None),
    ],
)
def test_each_filter(candidate, reason):
    assert reject_reason(candidate) == reason


def test_filter_counts_every_removal():
    kept, removed = filter_commits([commit(), commit(message="wip"), commit(parents=())])
    assert len(kept) == 1
    assert removed["message"] == 1 and removed["root"] == 1
    assert sum(removed.values()) == 2
