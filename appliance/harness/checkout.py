"""Worktrees: a package's repository at one commit, with nothing from after it.

A worktree is a new git repository holding only the objects of that commit's tree and a
single commit of it; no other commit, ref or object of the corpus repository is in it,
so no later history can be reached from inside. Files are written by git itself from
Forge's clean corpus copy (no filters, no hooks). Worktrees live in FORGE_HOME/worktrees
and are removed when the work is done; that folder and each worktree's are mode 0700,
since sandboxed code may leave files there (setuid ones included) that no other local
user may reach.

Validation refuses trees Forge cannot check out safely (appliance.packages.validate), but
a commit that gets here anyway fails with CheckoutError, which grading records as an
infrastructure failure of that commit, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from appliance.config import Config
from appliance.errors import ForgeError
from appliance.packages import gitsafe

_IDENT = ["-c", "user.name=Forge", "-c", "user.email=forge@localhost"]
_LINK_MODE = b"120000"
_PRIVATE = 0o700


class CheckoutError(ForgeError):
    """A commit (or one file of it) cannot be written into a worktree safely."""


def _refuse(sha: str, what: str) -> CheckoutError:
    return CheckoutError(
        f"commit {sha[:12]} cannot be checked out safely: {what}",
        "grading counts it as an infrastructure failure; packages ingested now are "
        "checked for this at validation (forge package validate DIR names the problem)",
    )


def checkout(repo: Path, sha: str, dest: Path) -> None:
    """Write commit `sha` of `repo` into a new repository at `dest` (must not exist);
    CheckoutError when git cannot (a `.git` entry in the tree, a damaged object)."""
    try:
        _checkout(repo, sha, dest)
    except gitsafe.GitError as exc:
        raise _refuse(sha, str(exc)) from exc


def _checkout(repo: Path, sha: str, dest: Path) -> None:
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
    commit has it, deleted when it does not. No link is ever followed: a path that is
    a link at `sha`, or that passes through a link in the worktree, is a CheckoutError."""
    if not paths:
        return
    targets = {path: _plain_path(dest, path, sha) for path in paths}  # before git sees them
    try:
        listing = gitsafe.git(["ls-tree", "-z", "--full-tree", sha, "--", *paths], git_dir=repo)
    except gitsafe.GitError as exc:
        raise _refuse(sha, str(exc)) from exc
    present = {}
    for entry in listing.split(b"\0"):
        if entry:
            meta, _, path = entry.partition(b"\t")
            mode, kind, blob = meta.split()
            if kind == b"blob":
                present[path.decode("utf-8", errors="surrogateescape")] = (mode, blob.decode())
    for path, target in targets.items():
        if path in present:
            mode, blob = present[path]
            if mode == _LINK_MODE:
                raise _refuse(sha, f"{path!r} is a symbolic link; test files must be files")
            try:
                data = gitsafe.git(["cat-file", "blob", blob], git_dir=repo)
            except gitsafe.GitError as exc:
                raise _refuse(sha, str(exc)) from exc
            _make_folders(dest, target.parent, sha)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # a folder at the parent, a file at the commit
            else:
                target.unlink(missing_ok=True)  # a link itself, never what it points to
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(target, 0o755 if mode == b"100755" else 0o644)
        elif os.path.lexists(target) and not (target.is_dir() and not target.is_symlink()):
            target.unlink()


def _plain_path(dest: Path, path: str, sha: str) -> Path:
    """`dest / path` when `path` is relative, has no `.`/`..`/`.git` part, and passes
    through no link already in the worktree; CheckoutError otherwise."""
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts):
        raise _refuse(sha, f"{path!r} is not a plain path inside the worktree")
    here = dest
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            raise _refuse(sha, f"{path!r} passes through the symbolic link {part!r}")
    return dest / path


def _make_folders(dest: Path, folder: Path, sha: str) -> None:
    """Create `folder` (inside `dest`) and its parents as real folders; a file in the
    way is replaced, as git would (no link is on the way: _plain_path checked)."""
    for here in [*reversed(folder.relative_to(dest).parents), folder.relative_to(dest)]:
        step = dest / here
        try:
            st = os.lstat(step)
        except FileNotFoundError:
            step.mkdir()
            continue
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(sha, f"{here} is a symbolic link in the worktree")
        if not stat.S_ISDIR(st.st_mode):
            step.unlink()
            step.mkdir()


@contextmanager
def worktree(config: Config, repo: Path, sha: str, *, label: str = "") -> Iterator[Path]:
    """A fresh worktree of `sha` under FORGE_HOME/worktrees, removed afterwards (unless
    harness.keep_worktrees is set). The repository is at `path / "repo"`; `path / "out"`
    holds what a run writes for Forge (the JUnit report)."""
    base = config.dir("worktrees")
    base.mkdir(parents=True, exist_ok=True, mode=_PRIVATE)
    os.chmod(base, _PRIVATE)  # also a folder made by an older Forge, or under another umask
    path = base / f"{label or sha[:12]}-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(mode=_PRIVATE)
        os.chmod(path, _PRIVATE)
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
