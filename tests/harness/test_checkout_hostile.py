"""Checkout never crashes on a tree it cannot write safely, never follows a link out of the
worktree, and keeps worktrees private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from appliance.errors import ForgeError
from appliance.harness.checkout import CheckoutError, checkout, overlay, worktree
from tests.conftest import TEST_V1, TEST_V2, RepoBuilder, git


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    return git(repo, *args, stdin=stdin)


def _bare(repo: RepoBuilder, dest: Path) -> Path:
    """The repository as the corpus holds it: bare, objects and refs only."""
    _git(repo.path, "clone", "-q", "--bare", "--no-hardlinks", str(repo.path), str(dest))
    return dest


@pytest.fixture
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "test_calc.py").write_text("precious\n")
    return folder


def test_dot_git_tree_entry_is_a_checkout_error(tmp_path, forge_home):
    repo = RepoBuilder(tmp_path / "src")
    head = repo.commit("Start", {"README": "hello\n"})
    blob = _git(repo.path, "hash-object", "-w", "--stdin", stdin="[core]\n\tbare = false\n")
    inner = _git(repo.path, "mktree", stdin=f"100644 blob {blob}\tconfig\n")
    tree = _git(repo.path, "mktree", stdin=_git(repo.path, "ls-tree", head)
                + f"\n040000 tree {inner}\t.GIT\n")  # fmt: skip
    sha = _git(repo.path, "commit-tree", tree, "-p", head, "-m", "hostile")
    _git(repo.path, "update-ref", "refs/heads/main", sha)
    bare = _bare(repo, tmp_path / "bare.git")

    with pytest.raises(CheckoutError) as caught:
        checkout(bare, sha, tmp_path / "work")
    assert isinstance(caught.value, ForgeError)  # the CLI shows it without a traceback
    assert f"commit {sha[:12]} cannot be checked out safely" in caught.value.message
    assert ".GIT" in caught.value.message
    with pytest.raises(CheckoutError), worktree(forge_home, bare, sha) as _:
        pass
    assert list(forge_home.dir("worktrees").iterdir()) == []  # nothing left behind


def _linked_parent(tmp_path: Path, link: str, target: str) -> tuple[Path, str, str]:
    """A repository whose parent commit has `link` → `target`; the task commit replaces
    it with the real tests/test_calc.py."""
    repo = RepoBuilder(tmp_path / "src")
    repo.commit("Start", {"src/calc.py": "x = 1\n"})
    (repo.path / link).parent.mkdir(parents=True, exist_ok=True)
    (repo.path / link).symlink_to(target)
    parent = repo.commit("Link the tests", {})
    (repo.path / link).unlink()
    sha = repo.commit("Real tests", {"tests/test_calc.py": TEST_V2})
    return _bare(repo, tmp_path / "bare.git"), parent, sha


def test_test_file_that_is_a_link_leading_out_is_replaced_not_followed(
    tmp_path, forge_home, outside
):
    bare, parent, sha = _linked_parent(
        tmp_path, "tests/test_calc.py", str(outside / "test_calc.py")
    )
    with worktree(forge_home, bare, parent) as work:
        test = work / "repo" / "tests" / "test_calc.py"
        assert test.is_symlink()
        overlay(bare, sha, ["tests/test_calc.py"], work / "repo")
        assert not test.is_symlink() and test.read_text() == TEST_V2
    assert (outside / "test_calc.py").read_text() == "precious\n"


def test_test_file_under_a_linked_folder_is_a_checkout_error(tmp_path, forge_home, outside):
    bare, parent, sha = _linked_parent(tmp_path, "tests", str(outside))
    refused = pytest.raises(CheckoutError, match="passes through the symbolic link 'tests'")
    with worktree(forge_home, bare, parent) as work, refused:
        overlay(bare, sha, ["tests/test_calc.py"], work / "repo")
    assert (outside / "test_calc.py").read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["test_calc.py"]


def test_test_file_that_is_a_link_at_the_commit_is_a_checkout_error(tmp_path, forge_home):
    repo = RepoBuilder(tmp_path / "src")
    parent = repo.commit("Start", {"tests/test_calc.py": TEST_V1})
    (repo.path / "tests" / "test_calc.py").unlink()
    (repo.path / "tests" / "test_calc.py").symlink_to("/etc/passwd")
    sha = repo.commit("Link", {})
    bare = _bare(repo, tmp_path / "bare.git")
    with worktree(forge_home, bare, parent) as work:
        with pytest.raises(CheckoutError, match="is a symbolic link"):
            overlay(bare, sha, ["tests/test_calc.py"], work / "repo")
        assert (work / "repo" / "tests" / "test_calc.py").read_text() == TEST_V1


@pytest.mark.parametrize("path", ["../escape.py", "/etc/passwd", ".git/config", "a/./b.py"])
def test_paths_that_leave_the_worktree_are_refused(path, tmp_path, forge_home):
    repo = RepoBuilder(tmp_path / "src")
    sha = repo.commit("Start", {"tests/test_calc.py": TEST_V1})
    bare = _bare(repo, tmp_path / "bare.git")
    refused = pytest.raises(CheckoutError, match="not a plain path")
    with worktree(forge_home, bare, sha) as work, refused:
        overlay(bare, sha, [path], work / "repo")


def test_worktrees_are_private(tmp_path, forge_home):
    repo = RepoBuilder(tmp_path / "src")
    sha = repo.commit("Start", {"tests/test_calc.py": TEST_V1})
    bare = _bare(repo, tmp_path / "bare.git")
    base = forge_home.dir("worktrees")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # as an older Forge made it
    with worktree(forge_home, bare, sha) as work:
        assert stat.S_IMODE(base.stat().st_mode) == 0o700
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
        assert (work / "repo" / "tests" / "test_calc.py").read_text() == TEST_V1
