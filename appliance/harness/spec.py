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
from appliance.packages.environment import base_python, wheel_hashes
from appliance.packages.manifest import Manifest
from appliance.packages.testfiles import is_test_path


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
        """What the environment is made of: the interpreter, the platform, the requirements
        and every wheel's sha256. Commits and packages share an environment only when all of
        these agree, so no package's wheels can end up in another package's runs."""
        data = {
            "key": 2,  # 1 had no wheel hashes: those environments are simply not found again
            "python": f"{platform.python_implementation()}-{platform.python_version()}"
            f"{sys.abiflags}",
            "interpreter": base_python(),  # a venv links to it
            "platform": [sys.platform, platform.machine(), *platform.libc_ver()],
            "requirements": sorted(r.strip().lower() for r in self.requirements),
            "wheels": sorted(self.wheel_hashes),
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]


def find_package(db: sqlite_utils.Database, name: str) -> dict:
    """The package row for NAME (newest ingested version), NAME@VERSION (exact: neither
    part may contain '@'), or NAME-VERSION (the older spelling, which can be ambiguous:
    the newest match wins)."""
    rows = list(
        db.query(
            "SELECT * FROM packages WHERE name = ? OR name || '@' || version = ? "
            "OR name || '-' || version = ? "
            "ORDER BY name || '@' || version = ? DESC, ingested_at DESC, id DESC",
            [name, name, name, name],
        )
    )
    if not rows:
        known = [r["name"] for r in db.query("SELECT DISTINCT name FROM packages ORDER BY name")]
        raise UsageError(
            f"no package named {name!r} in the corpus",
            f"ingest it first (forge ingest DIR); known packages: {', '.join(known) or 'none'}",
        )
    return rows[0]


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
    row = find_package(db, package)
    commits = list(db.query("SELECT * FROM commits WHERE package_id = ? ORDER BY id", [row["id"]]))
    if shas is not None:
        chosen = []
        for want in shas:
            want = want.lower()
            hits = [c for c in commits if len(want) >= 7 and c["sha"].startswith(want)]
            if len(hits) != 1:
                what = "matches no task commit" if not hits else "is ambiguous"
                raise UsageError(
                    f"commit {want!r} {what} of {row['name']}-{row['version']}",
                    "give a sha (7+ hex digits) from the manifest; "
                    "forge harness check PACKAGE lists them",
                )
            chosen.append(hits[0])
        commits = chosen
    root = config.home / row["path"]
    repo = root / "repo"
    hashes = wheel_hashes(root / "packages")  # once per package: every commit shares them
    # Each commit is tested with its own set (schema 2); a row written without sets (only
    # requirements) has one set, used by every commit.
    sets = json.loads(row["requirement_sets"] or "[]") or [json.loads(row["requirements"])]
    specs = []
    for commit in commits:
        specs.append(
            CommitSpec(
                package=f"{row['name']}-{row['version']}",
                package_id=row["id"],
                manifest_sha256=row["manifest_sha256"],
                repo=repo,
                wheels=root / "packages",
                wheel_hashes=hashes,
                sha=commit["sha"],
                parent=commit["parent"],
                message=commit["message"],
                test_files=changed_test_files(repo, commit["parent"], commit["sha"]),
                requirements=tuple(sets[commit["requirement_set"]]),
                test_command=tuple(json.loads(row["test_command"])),
                test_timeout_s=row["test_timeout_s"],
            )
        )
    return specs


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
