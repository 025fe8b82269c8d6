"""`CommitSpec`: everything the harness needs to know about one commit, in one record.

It is made once from the database and the corpus (`commit_specs`), or, before a package
is ingested, from its manifest and folder (`manifest_spec`: validation's dry run), then
passed through every step (checkout → environment → sandboxed run → parse → grade), like
SWE-bench's TestSpec.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import sqlite_utils

from appliance.config import Config
from appliance.errors import UsageError
from appliance.packages import gitsafe
from appliance.packages.corpus import CorpusCommit, RepoPackage, commits_of, find_package
from appliance.packages.environment import wheel_hashes
from appliance.packages.manifest import Manifest
from appliance.packages.testfiles import is_test_path
from appliance.sandbox import base_python


@dataclass(frozen=True)
class CommitSpec:
    package: str  # name-version
    package_id: int  # 0: not in the database yet (validation)
    manifest_sha256: str
    repo: Path  # the corpus repository (bare, rebuilt by Forge)
    wheels: Path  # the package's wheel folder
    wheel_hashes: tuple[tuple[str, str], ...]  # (file name, sha256) of each wheel in it
    sha: str
    parent: str
    message: str
    test_files: tuple[str, ...]  # test files the commit adds, changes or deletes
    requirements: tuple[str, ...]
    test_command: tuple[str, ...]
    test_timeout_s: float

    @cached_property  # asked several times per run; the data behind it never changes
    def env_key(self) -> str:
        """What the environment is made of (`environment_key`)."""
        return environment_key(self.requirements, self.wheel_hashes)


def environment_key(requirements, wheel_hashes) -> str:
    """The interpreter, the platform, the requirements and every wheel's sha256. Commits
    and packages share an environment only when all of these agree, so no package's wheels
    can end up in another package's runs."""
    data = {
        "key": 2,  # 1 had no wheel hashes: those environments are simply not found again
        "python": f"{platform.python_implementation()}-{platform.python_version()}{sys.abiflags}",
        "interpreter": base_python(),  # a venv links to it
        "platform": [sys.platform, platform.machine(), *platform.libc_ver()],
        "requirements": sorted(r.strip().lower() for r in requirements),
        "wheels": sorted(tuple(w) for w in wheel_hashes),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def changed_test_files(repo: Path, parent: str, sha: str) -> tuple[str, ...]:
    out = gitsafe.git(
        ["diff", "--name-only", "--no-renames", "-z", parent, sha], git_dir=repo
    ).decode("utf-8", errors="surrogateescape")
    return tuple(sorted(p for p in out.split("\0") if p and is_test_path(p)))


def commit_specs(
    config: Config, db: sqlite_utils.Database, package: str, shas: list[str] | None = None
) -> list[CommitSpec]:
    """Specs for the package's commits (manifest order), or for the named ones (a unique
    prefix of at least 7 hex digits is enough)."""
    return package_specs(config, db, find_package(db, package), shas)


def package_specs(
    config: Config, db: sqlite_utils.Database, package: RepoPackage, shas: list[str] | None = None
) -> list[CommitSpec]:
    """`commit_specs` of a package already found."""
    commits = commits_of(db, package.id)
    if shas is not None:
        commits = [_one_commit(commits, package, want.lower()) for want in shas]
    root = config.home / package.path
    repo = root / "repo"
    hashes = wheel_hashes(root / "packages")  # once per package: every commit shares them
    return [
        CommitSpec(
            package=package.label,
            package_id=package.id,
            manifest_sha256=package.manifest_sha256,
            repo=repo,
            wheels=root / "packages",
            wheel_hashes=hashes,
            sha=commit.sha,
            parent=commit.parent,
            message=commit.message,
            test_files=changed_test_files(repo, commit.parent, commit.sha),
            # Each commit is tested with its own set (schema 2).
            requirements=package.requirement_sets[commit.requirement_set],
            test_command=package.test_command,
            test_timeout_s=package.test_timeout_s,
        )
        for commit in commits
    ]


def _one_commit(commits: list[CorpusCommit], package: RepoPackage, want: str) -> CorpusCommit:
    hits = [c for c in commits if len(want) >= 7 and c.sha.startswith(want)]
    if len(hits) != 1:
        what = "matches no task commit" if not hits else "is ambiguous"
        raise UsageError(
            f"commit {want!r} {what} of {package.label}",
            "give a sha (7+ hex digits) from the manifest; forge harness check PACKAGE lists them",
        )
    return hits[0]


def manifest_spec(
    manifest: Manifest, manifest_sha256: str, root: Path, repo: Path, sha: str
) -> CommitSpec:
    """The spec of commit `sha` of a package not ingested yet: from its manifest, its
    folder `root` (the wheels) and `repo` (a clean copy of its repository). It names the
    same environment (`env_key`) and test command as the spec `commit_specs` makes once
    the package is ingested."""
    commit = next(c for c in manifest.commits if c.sha == sha)
    return CommitSpec(
        package=f"{manifest.name}-{manifest.version}",
        package_id=0,
        manifest_sha256=manifest_sha256,
        repo=repo,
        wheels=root / "packages",
        wheel_hashes=wheel_hashes(root / "packages"),
        sha=commit.sha,
        parent=commit.parent,
        message=commit.message,
        test_files=changed_test_files(repo, commit.parent, commit.sha),
        requirements=manifest.requirements_of(commit.sha),
        test_command=tuple(manifest.test_command),
        test_timeout_s=manifest.test_timeout_s,
    )
