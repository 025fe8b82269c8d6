"""The demo repository's history: deterministic, and shaped as Forge's commit miner needs.

Builds the repository with repo_packages/demo_source/make_demo_repo.py and runs the demo
project's own test suite, with real git and real pytest, at every commit and at the
parent of every task commit.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "repo_packages" / "demo_source" / "make_demo_repo.py"

# The miner's filters, as the demo history is written against them.
MAX_FILES = 5
MAX_LINES = 200
VERBS = {
    "Accept", "Add", "Allow", "Avoid", "Compare", "Document", "Extract", "Handle", "Keep",
    "Make", "Parse", "Preserve", "Raise", "Reject", "Resolve", "Return", "Run", "Split",
    "Strip", "Support", "Treat", "Validate",
}  # fmt: skip
NOISE_WORDS = ("wip", "misc", "update", "bump", "release", "version")
# A dropped commit is reported under the first filter it fails, in this order.
FILTER_ORDER = (
    "root", "merge", "bot", "message", "docs-or-ci-only", "no-python",
    "too-many-files", "too-many-lines",
)  # fmt: skip

pytestmark = pytest.mark.slow


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo_repo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_script()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "metrica"
    demo.make_demo_repo(path)
    return path


@pytest.fixture(scope="module")
def shas(repo) -> dict[str, str]:
    return demo.commit_shas(repo)


def _git(repo: Path, *args: str) -> str:
    return demo.git(repo, *args)


def _export(repo: Path, treeish: str, dest: Path) -> Path:
    """Write the files of ``treeish`` into ``dest`` (git archive, no checkout)."""
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", treeish],
        capture_output=True,
        env=demo.git_env(),
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python before 3.11.4
            tar.extractall(dest)
    return dest


def _pytest(cwd: Path, *paths: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    # The demo needs pytest alone; other installed plugins only slow each run down.
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _in_parallel(function, items) -> list:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(function, items))


def _changed_files(repo: Path, sha: str) -> dict[str, int]:
    """Path -> lines added plus deleted, against the first parent."""
    numstat = _git(repo, "diff-tree", "--root", "--no-commit-id", "-r", "--numstat", sha)
    changed = {}
    for line in numstat.splitlines():
        added, deleted, path = line.split("\t")
        changed[path] = int(added) + int(deleted)
    return changed


def _rejections(repo: Path, sha: str) -> set[str]:
    """Every filter of the commit miner that ``sha`` fails; empty for a task."""
    parents = _git(repo, "rev-list", "--parents", "-n", "1", sha).split()[1:]
    if not parents:
        return {"root"}
    if len(parents) > 1:
        return {"merge"}
    author, subject = _git(repo, "log", "-1", "--format=%an%n%s", sha).splitlines()
    changed = _changed_files(repo, sha)
    paths = list(changed)
    words = subject.split()
    reasons = set()
    if author.endswith("[bot]"):
        reasons.add("bot")
    if (
        len(words) < 3
        or words[0] not in VERBS
        or any(subject.lower().startswith(word) for word in NOISE_WORDS)
    ):
        reasons.add("message")
    if all(path.endswith((".md", ".rst")) or path.startswith(".github/") for path in paths):
        reasons.add("docs-or-ci-only")
    if not any(path.endswith(".py") for path in paths):
        reasons.add("no-python")
    if not 1 <= len(paths) <= MAX_FILES:
        reasons.add("too-many-files")
    if sum(changed.values()) >= MAX_LINES:
        reasons.add("too-many-lines")
    return reasons


def test_build_is_deterministic(repo, tmp_path):
    again = demo.make_demo_repo(tmp_path / "again")
    assert again == _git(repo, "rev-parse", "HEAD").strip()


def test_history_is_long_enough(repo):
    assert int(_git(repo, "rev-list", "--count", "HEAD")) >= 30
    assert len(demo.TASK_COMMITS) >= 25
    assert len(demo.TASK_COMMITS_WITH_TESTS) >= 20
    subjects = [commit.subject for commit in demo.HISTORY]
    assert len(set(subjects)) == len(subjects)


def test_commits_meet_the_mining_filters_they_are_meant_to(repo, shas):
    for commit in demo.HISTORY:
        sha = shas[commit.subject]
        reasons = _rejections(repo, sha)
        first = next((reason for reason in FILTER_ORDER if reason in reasons), None)
        if commit.kind in demo.history.TASK_KINDS:
            assert first is None, (commit.subject, reasons)
            touches_tests = any(path.startswith("tests/") for path in _changed_files(repo, sha))
            assert touches_tests == (commit.kind == "task"), commit.subject
        else:
            assert first == commit.kind, (commit.subject, reasons)
    assert set(demo.FILTERED_COMMITS.values()) == set(demo.history.FILTER_KINDS)


def test_suite_passes_at_head(repo, tmp_path):
    result = _pytest(_export(repo, "HEAD", tmp_path / "head"))
    assert result.returncode == 0, result.stdout


def test_suite_passes_at_every_commit(repo, shas, tmp_path):
    trees = sorted({_git(repo, "rev-parse", f"{sha}^{{tree}}").strip() for sha in shas.values()})

    def run(tree: str) -> str | None:
        result = _pytest(_export(repo, tree, tmp_path / tree))
        return None if result.returncode == 0 else f"tree {tree}:\n{result.stdout[-2000:]}"

    failures = [failure for failure in _in_parallel(run, trees) if failure]
    assert not failures, "\n".join(failures)


def test_new_tests_fail_at_the_parent(repo, tmp_path):
    def run(sha: str) -> str | None:
        tests = _git(repo, "diff-tree", "--no-commit-id", "-r", "--name-only",
                     "--diff-filter=AM", f"{sha}^", sha, "--", "tests/").split()  # fmt: skip
        if not tests:
            return f"{sha}: changes no test file"
        checkout = _export(repo, f"{sha}^", tmp_path / sha)
        for path in tests:
            (checkout / path).write_text(_git(repo, "show", f"{sha}:{path}"), encoding="utf-8")
        result = _pytest(checkout, *tests)
        # 1: tests failed; 2: a new test module failed to import what it tests.
        if result.returncode in (1, 2):
            return None
        return f"{sha}: exit {result.returncode} at the parent\n{result.stdout[-2000:]}"

    failures = [f for f in _in_parallel(run, demo.task_commits_with_tests(repo)) if f]
    assert not failures, "\n".join(failures)
