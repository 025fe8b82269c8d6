"""Where a solve run's code comes from: the package's newest commit in the corpus, or the
operator's own checkout (`--repo PATH`), read only.

Every git command goes through `appliance.packages.gitsafe` (no hooks, no config of the
repository's own). The stages and the tests see the snapshot's committed tree; the
checkout's work tree is written only by `apply_patch`, and only while it is clean.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from appliance.config import Config
from appliance.errors import ForgeError, UsageError
from appliance.harness.edits import EditNotApplied, apply_edits
from appliance.harness.spec import CommitSpec, package_specs
from appliance.packages import corpus, gitsafe
from appliance.packages.corpus import RepoPackage
from appliance.packages.split import history


class ApplyRefused(ForgeError):
    """A diff is not applied to the operator's checkout: it has changes of its own, or the
    diff does not apply there. Nothing is changed."""


@dataclass(frozen=True)
class Source:
    package: RepoPackage
    git_dir: Path  # the repository holding the snapshot: the corpus copy, or PATH's
    snapshot: str  # the commit whose tree the stages and the tests see
    checkout: Path | None  # the operator's work tree (--repo); None: the package's own
    contains: tuple[str, ...]  # the package's commits the snapshot is or descends from
    newest: str  # the package's newest commit (its requirement set is the environment's)


def corpus_repo(config: Config, package: RepoPackage) -> Path:
    return config.home / package.path / "repo"


def package_source(config: Config, db: sqlite_utils.Database, name: str) -> Source:
    """The newest commit of package `name` (NAME, NAME@VERSION or NAME-VERSION)."""
    package = corpus.find_package(db, name)
    newest = _newest(db, package)
    repo = corpus_repo(config, package)
    return Source(package, repo, newest, None, contained(repo, newest, history(db, package.name)),
                  newest)  # fmt: skip


def checkout_source(config: Config, db: sqlite_utils.Database, name: str, path: Path) -> Source:
    """The commit checked out at `path` (its HEAD), for package `name`."""
    package = corpus.find_package(db, name)
    top = toplevel(path)
    git_dir = Path(_git(["rev-parse", "--absolute-git-dir"], top))
    try:
        head = _git(["rev-parse", "--verify", "HEAD^{commit}"], top)
    except UsageError as exc:
        raise UsageError(f"{top} has no commit checked out", "commit something first") from exc
    return Source(package, git_dir, head, top, contained(git_dir, head, history(db, package.name)),
                  _newest(db, package))  # fmt: skip


def _newest(db: sqlite_utils.Database, package: RepoPackage) -> str:
    mine = {c.sha for c in corpus.commits_of(db, package.id)}
    ordered = [sha for sha in history(db, package.name) if sha in mine]
    if not ordered:
        raise UsageError(f"{package.label} has no commits", "ingest a package that lists some")
    return ordered[-1]


def toplevel(path: Path) -> Path:
    """The top of the git work tree at `path`; UsageError when there is none."""
    if not path.is_dir():
        raise UsageError(
            f"{path} is not a folder", "give the checkout of the repository: --repo PATH"
        )
    return Path(_git(["rev-parse", "--show-toplevel"], path))


def _git(args: list[str], cwd: Path) -> str:
    try:
        return gitsafe.git(args, cwd=cwd).decode("utf-8", "surrogateescape").strip()
    except gitsafe.GitError as exc:
        raise UsageError(
            f"{cwd} is not a usable git checkout: {exc.stderr.strip() or exc.message}",
            "give the work tree of a git repository (git clone, then --repo PATH)",
        ) from exc


def contained(git_dir: Path, snapshot: str, commits: list[str]) -> tuple[str, ...]:
    """Which of `commits` the snapshot is or descends from, in their order."""
    try:
        out = gitsafe.git(["rev-list", snapshot], git_dir=git_dir)
    except gitsafe.GitError:
        return ()
    ancestors = set(out.decode().split())
    return tuple(sha for sha in commits if sha in ancestors)


def is_ancestor(git_dir: Path, commit: str, snapshot: str) -> bool:
    """Whether `snapshot` is `commit` or descends from it; False when `git_dir` lacks either."""
    try:
        gitsafe.git(["merge-base", "--is-ancestor", commit, snapshot], git_dir=git_dir)
    except gitsafe.GitError:
        return False  # 1: not an ancestor; anything else: git cannot tell here
    return True


def run_git_dir(config: Config, db: sqlite_utils.Database, package_id: int,
                repo_path: str | None, snapshot: str) -> Path:  # fmt: skip
    """The repository holding a recorded run's snapshot; UsageError when it is gone."""
    if repo_path is None:
        package = corpus.package_by_id(db, package_id)
        if package is None:
            raise UsageError("the run's package is no longer in the corpus")
        return corpus_repo(config, package)
    path = Path(repo_path)
    git_dir = Path(_git(["rev-parse", "--absolute-git-dir"], toplevel(path)))
    if not is_ancestor(git_dir, snapshot, snapshot):
        raise UsageError(
            f"{path} no longer holds the run's snapshot {snapshot[:12]}",
            "fetch that commit into the checkout again",
        )
    return git_dir


def spec_for(config: Config, db: sqlite_utils.Database, source: Source, task: str) -> CommitSpec:
    """The harness's record for testing the snapshot: the package's environment (the
    requirement set of its newest commit) and test command, the snapshot's tree."""
    (spec,) = package_specs(config, db, source.package, [source.newest])
    return dataclasses.replace(
        spec, repo=source.git_dir, sha=source.snapshot, parent=source.snapshot, message=task,
        test_files=(),
    )  # fmt: skip


def changes(checkout: Path) -> list[str]:
    """What `git status` shows of the work tree (untracked files included); [] when clean."""
    out = gitsafe.git(["status", "--porcelain=v1", "-z", "--untracked-files=normal"], cwd=checkout)
    return [entry for entry in out.decode("utf-8", "surrogateescape").split("\0") if entry]


def check_clean(checkout: Path) -> None:
    found = changes(checkout)
    if found:
        raise ApplyRefused(
            f"{checkout} has {len(found)} uncommitted change(s) ({found[0].strip()}): "
            "Forge applies a diff only to a clean work tree, and changed nothing",
            "commit or stash them (git stash -u), then apply the run's diff: "
            "forge runs show RUN --json, or git apply",
        )


def apply_patch(checkout: Path, patch: str) -> list[str]:
    """Apply `patch` to the clean work tree at `checkout`; the paths it changed."""
    check_clean(checkout)
    try:
        return apply_edits(checkout, "diff", patch)
    except EditNotApplied as exc:
        raise ApplyRefused(
            f"the diff does not apply to {checkout}: {exc.message}",
            "its HEAD may have moved since the run; nothing was changed",
        ) from exc
