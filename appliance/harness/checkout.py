"""Worktrees: a package's repository at one commit, with nothing from after it.

A worktree is a new git repository holding only the objects of that commit's tree and a
single commit of it; no other commit, ref or object of the corpus repository is in it,
so no later history can be reached from inside. Files are written by git itself from
Forge's clean corpus copy (no filters, no hooks). Worktrees live in FORGE_HOME/worktrees
and are removed when the work is done.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from appliance.config import Config
from appliance.packages import gitsafe

_IDENT = ["-c", "user.name=Forge", "-c", "user.email=forge@localhost"]


def checkout(repo: Path, sha: str, dest: Path) -> None:
    """Write commit `sha` of `repo` into a new repository at `dest` (must not exist)."""
    tree = gitsafe.git(["rev-parse", "--verify", f"{sha}^{{tree}}"], git_dir=repo).decode().strip()
    dest.mkdir(parents=True)
    gitsafe.git(["init", "--quiet", "--template=", "--initial-branch=main", str(dest)])
    (dest / ".git" / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
    )
    objects = gitsafe.git(["rev-list", "--objects", tree], git_dir=repo)
    pack = gitsafe.git(["pack-objects", "--stdout", "-q"], git_dir=repo, input=objects)
    gitsafe.git(["index-pack", "--stdin"], cwd=dest, input=pack)
    gitsafe.git(["read-tree", tree], cwd=dest)
    gitsafe.git(["checkout-index", "--all", "--force"], cwd=dest)
    message = f"snapshot of {sha}\n".encode()
    commit = gitsafe.git([*_IDENT, "commit-tree", tree], cwd=dest, input=message).decode().strip()
    gitsafe.git(["update-ref", "refs/heads/main", commit], cwd=dest)


def overlay(repo: Path, sha: str, paths: Sequence[str], dest: Path) -> None:
    """Make each of `paths` in the worktree `dest` as it is at `sha`: written when the
    commit has it, deleted when it does not."""
    if not paths:
        return
    listing = gitsafe.git(["ls-tree", "-z", "--full-tree", sha, "--", *paths], git_dir=repo)
    present = {}
    for entry in listing.split(b"\0"):
        if entry:
            meta, _, path = entry.partition(b"\t")
            mode, kind, blob = meta.split()
            if kind == b"blob":
                present[path.decode("utf-8", errors="surrogateescape")] = (mode, blob.decode())
    root = dest.resolve()
    for path in paths:
        target = (dest / path).resolve()
        if not target.is_relative_to(root) or ".git" in Path(path).parts:
            raise ValueError(f"{path!r} is not a path inside the worktree")
        if path in present:
            mode, blob = present[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            target.write_bytes(gitsafe.git(["cat-file", "blob", blob], git_dir=repo))
            target.chmod(0o755 if mode == b"100755" else 0o644)
        elif target.is_file() or target.is_symlink():
            target.unlink()


@contextmanager
def worktree(config: Config, repo: Path, sha: str, *, label: str = "") -> Iterator[Path]:
    """A fresh worktree of `sha` under FORGE_HOME/worktrees, removed afterwards (unless
    harness.keep_worktrees is set). The repository is at `path / "repo"`; `path / "out"`
    holds what a run writes for Forge (the JUnit report)."""
    base = config.dir("worktrees")
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{label or sha[:12]}-{uuid.uuid4().hex[:8]}"
    try:
        checkout(repo, sha, path / "repo")
        (path / "out").mkdir()
        yield path
    finally:
        if not config.settings.harness.keep_worktrees:
            shutil.rmtree(path, ignore_errors=True)


def sweep(config: Config, older_than_s: float = 86400) -> int:
    """Remove worktrees a crash left behind (older than any run could be); return how many."""
    base = config.dir("worktrees")
    if not base.is_dir() or config.settings.harness.keep_worktrees:
        return 0
    cutoff = time.time() - older_than_s
    gone = 0
    for entry in base.iterdir():
        if entry.lstat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            gone += 1
    return gone
