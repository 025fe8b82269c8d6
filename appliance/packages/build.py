"""`forge package build` (connected side): turn a git repository into a repo package.

Mines the commits with PyDriller, keeps those that make good tasks (mining.py), copies
the repository as a clean bare repo, gathers wheels for the pinned requirements, and
writes manifest.json with every hash. The package is assembled in a temporary folder
and renamed into place, so a failed build leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.errors import PackageBuildError
from appliance.packages import gitsafe
from appliance.packages.environment import EnvironmentFailed, resolve
from appliance.packages.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    CommitEntry,
    FileChange,
    Manifest,
    Source,
)
from appliance.packages.mining import CandidateCommit, filter_commits
from appliance.packages.wheels import sha256_file


@dataclass(frozen=True)
class BuildOptions:
    source: str  # a local git repository or a git URL
    output: Path
    name: str | None = None
    version: str | None = None
    description: str = ""
    license: str = ""
    python: str = ">=3.11"
    requirements: Sequence[str] = ("pytest",)
    test_command: Sequence[str] = ("pytest", "-q")
    test_timeout_s: float = 600
    split: str | None = None
    max_commits: int | None = None
    since: datetime | None = None
    find_links: Path | None = None  # take wheels from here instead of the index


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    scanned: int
    removed: dict[str, int]


def _candidates(
    repo_path: str, since: datetime | None, progress: Callable[[int], None]
) -> list[CandidateCommit]:
    from pydriller import Repository

    found = []
    for commit in Repository(repo_path, since=since, order="topo-order").traverse_commits():
        files = tuple(
            (m.new_path or m.old_path, m.added_lines, m.deleted_lines)
            for m in commit.modified_files
        )
        found.append(
            CandidateCommit(
                sha=commit.hash,
                parents=tuple(commit.parents),
                author=f"{commit.author.name} <{commit.author.email}>",
                message=commit.msg,
                files=files,
                date=commit.author_date.isoformat(),
            )
        )
        progress(len(found))
    return found


def _default_name(source: str) -> str:
    base = source.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git").lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._") or "repo"
    return name[:64]


def _bare_copy(source: str, dest: Path) -> str:
    """A bare clone with no hooks and a minimal config, packed into one pack file."""
    gitsafe.init_bare(dest)
    gitsafe.git(
        [
            "fetch",
            "--quiet",
            "--no-tags",
            source,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        git_dir=dest,
    )
    try:
        head_ref = gitsafe.git(["symbolic-ref", "-q", "HEAD"], cwd=Path(source)).decode().strip()
    except gitsafe.GitError:  # detached HEAD: keep it on a branch of its own
        head_ref = "refs/heads/forge-head"
        sha = gitsafe.git(["rev-parse", "HEAD"], cwd=Path(source)).decode().strip()
        gitsafe.git(["update-ref", head_ref, sha], git_dir=dest)
    gitsafe.git(["symbolic-ref", "HEAD", head_ref], git_dir=dest)
    gitsafe.git(["repack", "-a", "-d", "-q", "-n"], git_dir=dest)  # -n: no info/refs
    gitsafe.git(["prune-packed"], git_dir=dest)
    (dest / "FETCH_HEAD").unlink(missing_ok=True)
    shutil.rmtree(dest / "hooks", ignore_errors=True)
    (dest / "description").unlink(missing_ok=True)
    for path in dest.rglob("*"):
        if path.is_file():
            path.chmod(0o444 if "objects" in path.parts else 0o644)
    return head_ref.removeprefix("refs/heads/")


def download_wheels(pins: Sequence[str], dest: Path, find_links: Path | None) -> None:
    """pip download exactly `pins` as wheels into `dest` (from `find_links` alone if given)."""
    args = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
    ]
    if find_links is not None:
        args += ["--no-index", "--find-links", str(find_links)]
    proc = subprocess.run(args + list(pins), capture_output=True, text=True)
    if proc.returncode != 0:
        raise PackageBuildError(
            f"could not gather wheels: {proc.stderr.strip()[-2000:]}",
            "check the requirements have wheels for this platform",
        )


def build_package(
    opts: BuildOptions, cache_dir: Path, progress: Callable[[str], None] = lambda msg: None
) -> BuildResult:
    output = Path(opts.output)
    if output.exists() and any(output.iterdir()):
        raise PackageBuildError(
            f"{output} exists and is not empty", "choose a new output folder or remove the old one"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-build-", dir=output.parent) as tmp:
        work = Path(tmp)
        source = opts.source
        if not Path(source).exists():  # a URL: clone once, mine and copy from the clone
            progress(f"cloning {source}")
            try:
                subprocess.run(
                    ["git", "clone", "--quiet", "--no-checkout", source, str(work / "clone")],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=gitsafe.git_env(),
                )
            except subprocess.CalledProcessError as exc:
                raise PackageBuildError(f"cannot clone {source}: {exc.stderr.strip()}") from exc
            source = str(work / "clone")
        elif not (Path(source) / ".git").exists() and not (Path(source) / "HEAD").exists():
            raise PackageBuildError(
                f"{source} is not a git repository", "give the path of a git checkout or a git URL"
            )
        source = str(Path(source).resolve()) if Path(source).exists() else source

        progress("mining commits")
        try:
            candidates = _candidates(
                source,
                opts.since,
                lambda n: progress(f"mining commits: {n} read") if n % 100 == 0 else None,
            )
        except Exception as exc:  # PyDriller/GitPython raise many types for a bad repo
            raise PackageBuildError(f"cannot read the history of {opts.source}: {exc}") from exc
        kept, removed = filter_commits(candidates)
        if opts.max_commits is not None:
            kept = kept[-opts.max_commits :]
        if not kept:
            raise PackageBuildError(
                f"no commit of {opts.source} passes the filters "
                f"({', '.join(f'{k}: {v}' for k, v in removed.items() if v)})",
                "widen --since, or pick a repository with small, well-described commits",
            )

        package = work / "package"
        package.mkdir()
        progress("copying the repository")
        branch = _bare_copy(source, package / "repo")

        progress("resolving requirements")
        try:
            pins = resolve(list(opts.requirements), opts.find_links, cache_dir=cache_dir)
        except EnvironmentFailed as exc:
            raise PackageBuildError(
                f"the requirements do not resolve to wheels: {exc.output}",
                "fix the requirements or add wheels to --find-links",
            ) from exc
        progress(f"gathering {len(pins)} wheels")
        (package / "packages").mkdir()
        download_wheels(pins, package / "packages", opts.find_links)
        wheels = {p.name: sha256_file(p) for p in sorted((package / "packages").iterdir())}
        for path in (package / "packages").iterdir():
            path.chmod(0o644)

        head = gitsafe.git(["rev-parse", "HEAD"], git_dir=package / "repo").decode().strip()
        when = (
            gitsafe.git(["log", "-1", "--format=%cs", "HEAD"], git_dir=package / "repo")
            .decode()
            .strip()
            .replace("-", "")
        )
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            name=opts.name or _default_name(opts.source),
            version=opts.version or f"{when}.{head[:12]}",
            description=opts.description,
            license=opts.license,
            python=opts.python,
            requirements=pins,
            test_command=list(opts.test_command),
            test_timeout_s=opts.test_timeout_s,
            split=opts.split,
            source=Source(
                url=opts.source if not Path(opts.source).exists() else "", branch=branch, head=head
            ),
            commits=[
                CommitEntry(
                    sha=c.sha,
                    parent=c.parents[0],
                    message=c.message,
                    author_date=c.date,
                    files=[FileChange(path=p, added=a, deleted=d) for p, a, d in c.files],
                )
                for c in kept
            ],
            wheels=wheels,
        )
        (package / MANIFEST_NAME).write_text(manifest.to_json())
        if output.exists():
            output.rmdir()
        package.rename(output)
    return BuildResult(output, manifest, len(candidates), removed)
