"""`forge package build` (connected side): turn a git repository into a repo package.

Mines the commits with PyDriller, keeps those that make good tasks (mining.py), copies
the repository as a clean bare repo, reads what each kept commit declares it needs
(declared.py: read from git, nothing runs), and pins them (plus `-r` requirements, pytest
and the build backend) for the target Python and platform, newest commit first: a commit
whose declaration a set already pinned satisfies shares it, any other gets a set of its
own, up to `max_requirement_sets`. It gathers the wheels of every set and writes
manifest.json (schema 2: the sets, and which set each commit uses) with every hash.
The package is assembled in a temporary folder and renamed into place, so a failed build
leaves nothing behind.

SOURCE is a work tree (a detached HEAD included), a bare repository (`git clone
--mirror`) or a URL.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from appliance.digest import sha256_file
from appliance.errors import PackageBuildError
from appliance.packages import gitsafe
from appliance.packages.declared import Declaration, DeclarationError, Pick, read_declaration
from appliance.packages.environment import EnvironmentFailed, resolve
from appliance.packages.manifest import (
    MANIFEST_NAME,
    MAX_REQUIREMENT_SETS,
    SCHEMA_VERSION,
    CommitEntry,
    FileChange,
    Manifest,
    Source,
)
from appliance.packages.mining import CandidateCommit, filter_commits


@dataclass(frozen=True)
class BuildOptions:
    source: str  # a local git repository or a git URL
    output: Path
    name: str | None = None
    version: str | None = None
    description: str = ""
    license: str = ""
    python: str = ">=3.11"
    requirements: Sequence[str] = ()  # added to the declared ones (pytest always is)
    test_command: Sequence[str] = ("pytest", "-q")
    test_timeout_s: float = 600
    split: str | None = None
    max_commits: int | None = None
    since: datetime | None = None
    find_links: Path | None = None  # take wheels from here instead of the index
    index_url: str | None = None  # a PEP 503 simple index instead of PyPI (a private mirror)
    extras: Sequence[str] = ()  # the test extras to use instead of the one picked by name
    groups: Sequence[str] = ()  # the dependency groups to use instead of the one picked
    python_version: str | None = None  # "3.12"; default: this box's
    platform: str | None = None  # uv's platform name ("x86_64-manylinux_2_28"); default: this box
    any_commit: bool = False  # keep commits that do not change both code and tests
    max_requirement_sets: int = 8  # a commit that would need one more is dropped
    # Resolve each set against today's index, not as the index was at its commit's date.
    latest: bool = False


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    scanned: int
    removed: dict[str, int]
    declared: tuple[str, ...] = ()  # where the newest commit's declarations came from


def _candidates(
    repo_path: str, since: datetime | None, progress: Callable[[int], None]
) -> list[CandidateCommit]:
    # PyDriller (and GitPython): only on the connected side, when a package is built
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


def _git_dir(source: str) -> Path:
    """The git directory of a work tree or a bare repository, or PackageBuildError (also
    for a plain folder inside some other repository: that one is not what was named)."""
    path = Path(source).resolve()
    try:
        out = gitsafe.git(["rev-parse", "--absolute-git-dir"], cwd=path)
    except gitsafe.GitError:
        out = b""
    git_dir = Path(out.decode().strip()) if out else None
    if git_dir is None or (git_dir.resolve() != path and not (path / ".git").exists()):
        raise PackageBuildError(
            f"{source} is not a git repository",
            "give the path of a git checkout, a bare repository or a git URL",
        )
    return git_dir


def _bare_copy(source: Path, dest: Path) -> str:
    """A bare clone with no hooks and a minimal config, packed into one pack file.
    `source` is a git directory; a detached HEAD is kept on a branch of its own."""
    gitsafe.init_bare(dest)
    try:
        head_ref = gitsafe.git(["symbolic-ref", "-q", "HEAD"], git_dir=source).decode().strip()
    except gitsafe.GitError:  # detached HEAD: fetched onto a branch of its own
        head_ref = "refs/heads/forge-head"
    specs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
    if head_ref == "refs/heads/forge-head":
        specs.append(f"+HEAD:{head_ref}")
    gitsafe.git(["fetch", "--quiet", "--no-tags", str(source), *specs], git_dir=dest)
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


_MANYLINUX = re.compile(r"^(?P<arch>[a-z0-9_]+)-manylinux_(?P<major>\d+)_(?P<minor>\d+)$")


def _pip_platforms(uv_platform: str) -> list[str]:
    """pip download's --platform tags for one of uv's platform names (manylinux ones)."""
    match = _MANYLINUX.match(uv_platform)
    if match is None:
        raise PackageBuildError(
            f"--platform {uv_platform!r} is not one this build can gather wheels for",
            "give ARCH-manylinux_X_Y (e.g. x86_64-manylinux_2_28), or leave it to this box's",
        )
    arch, major, minor = match["arch"], int(match["major"]), int(match["minor"])
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}  # PEP 599's aliases
    return [*tags, *(f"{tag}_{arch}" for tag, at in legacy.items() if minor >= at), "any"]


def download_wheels(
    pins: Sequence[str],
    dest: Path,
    find_links: Path | None,
    *,
    index_url: str | None = None,
    python_version: str | None = None,
    platform_name: str | None = None,
) -> None:
    """pip download exactly `pins` as wheels into `dest` (from `find_links` alone if given,
    else from `index_url` or PyPI), for the target Python and platform."""
    args = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
    ]
    if find_links is not None:
        args += ["--no-index", "--find-links", str(find_links)]
    elif index_url:
        args += ["--index-url", index_url]
    if python_version:
        args += ["--python-version", python_version]
    for tag in _pip_platforms(platform_name) if platform_name else []:
        args += ["--platform", tag]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # the operator's pip.conf must not pick the index
    proc = subprocess.run(args + list(pins), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise PackageBuildError(
            f"could not gather wheels: {proc.stderr.strip()[-2000:]}",
            "check the requirements have wheels for this platform",
        )


def target_python(opts: BuildOptions) -> tuple[str, str]:
    """(X.Y given to the resolver, the full version requires-python is checked against)."""
    if opts.python_version:
        if not re.fullmatch(r"3\.\d{1,2}", opts.python_version):
            raise PackageBuildError(
                f"--python-version {opts.python_version!r} is not a Python 3 version",
                "give MAJOR.MINOR, e.g. 3.12",
            )
        return opts.python_version, opts.python_version
    return f"{sys.version_info.major}.{sys.version_info.minor}", platform.python_version()


def excludes_python(declaration: Declaration, full_version: str) -> str | None:
    """The refusal sentence when `declaration`'s requires-python excludes `full_version`."""

    if declaration.requires_python is None:
        return None
    try:
        spec = SpecifierSet(declaration.requires_python)
    except InvalidSpecifier:
        return f"its requires-python {declaration.requires_python!r} is not a version specifier"
    if spec.contains(full_version, prereleases=True):
        return None
    return f"the project requires Python {spec}, which excludes Python {full_version}"


def satisfied_by(
    declaration: Declaration,
    pins: Sequence[str],
    python_version: str,
    overridden: frozenset[str] = frozenset(),
) -> bool:
    """Whether every requirement `declaration` makes (for the target Python) is met by
    `pins`: then the commit can share them. Projects in `overridden` (named by the
    operator's `-r`) are not the commit's to decide."""

    pinned = {}
    for pin in pins:
        req = Requirement(pin)
        versions = [s.version for s in req.specifier if s.operator == "=="]
        if versions:
            pinned[canonicalize_name(req.name)] = versions[0]
    env = default_environment()
    env.update(python_version=python_version, python_full_version=f"{python_version}.0")
    for text in declaration.all:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        if canonicalize_name(req.name) in overridden:
            continue
        version = pinned.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            return False
    return True


@dataclass(frozen=True)
class _Mined:
    """What mining the history found."""

    scanned: int  # commits read
    kept: list[CandidateCommit]  # those that pass the filters, oldest first
    removed: dict[str, int]  # how many commits each filter removed


@dataclass(frozen=True)
class _Chosen:
    """The commits the package keeps and the pinned requirement sets they use."""

    commits: list[CandidateCommit]  # oldest first
    sets: list[list[str]]  # set 0 is the newest commit's
    uses: dict[str, int]  # commit sha -> its index into `sets`
    removed: dict[str, int]  # the miner's counts and the commits dropped for requirements
    declared: tuple[str, ...]  # where the newest commit's declarations came from


def build_package(
    opts: BuildOptions, cache_dir: Path, progress: Callable[[str], None] = lambda msg: None
) -> BuildResult:
    """Build the package in a temporary folder beside `opts.output`, then rename it there."""
    output = Path(opts.output)
    _check_options(opts, output)
    xy, full = target_python(opts)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-build-", dir=output.parent) as tmp:
        work = Path(tmp)
        source = _local_repository(opts.source, work, progress)
        git_dir = _git_dir(source)  # a work tree's .git, or the bare repository itself
        package = work / "package"
        package.mkdir()
        progress("copying the repository")
        branch = _bare_copy(git_dir, package / "repo")
        if git_dir.resolve() == Path(source).resolve():
            # A bare source is mined from the copy: one without core.bare set (as some
            # mirroring tools leave it) reads as a broken work tree, and PyDriller writes
            # its own settings into the config it reads (the copy's is put back).
            config = (package / "repo" / "config").read_bytes()
            mined = _mine(opts, str(package / "repo"), progress)
            (package / "repo" / "config").write_bytes(config)
        else:
            mined = _mine(opts, str(Path(source).resolve()), progress)
        chosen = _choose_commits(opts, mined, package / "repo", (xy, full), cache_dir, progress)
        progress(f"gathering the wheels of {len(chosen.sets)} requirement sets")
        wheels = _gather_wheels(chosen.sets, package / "packages", opts)
        manifest = _manifest(opts, package / "repo", branch, chosen, wheels)
        (package / MANIFEST_NAME).write_text(manifest.to_json())
        if output.exists():
            output.rmdir()
        package.rename(output)
    return BuildResult(output, manifest, mined.scanned, chosen.removed, chosen.declared)


def _check_options(opts: BuildOptions, output: Path) -> None:
    """Refuses what would fail late, before anything is mined or resolved."""
    if output.exists() and any(output.iterdir()):
        raise PackageBuildError(
            f"{output} exists and is not empty", "choose a new output folder or remove the old one"
        )
    if opts.platform:
        _pip_platforms(opts.platform)
    if not 1 <= opts.max_requirement_sets <= MAX_REQUIREMENT_SETS:
        raise PackageBuildError(
            f"--max-requirement-sets {opts.max_requirement_sets} is out of range",
            f"give 1 to {MAX_REQUIREMENT_SETS}",
        )


def _local_repository(source: str, work: Path, progress: Callable[[str], None]) -> str:
    """`source` itself when it is on this box; a URL is cloned once into `work`, and the
    build mines and copies from the clone."""
    if Path(source).exists():
        return source
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
    return str(work / "clone")


def _mine(opts: BuildOptions, source: str, progress: Callable[[str], None]) -> _Mined:
    """Read the history of `source` and keep the commits that make good tasks."""
    progress("mining commits")
    try:
        candidates = _candidates(
            source,
            opts.since,
            lambda n: progress(f"mining commits: {n} read") if n % 100 == 0 else None,
        )
    except Exception as exc:  # PyDriller/GitPython raise many types for a bad repo
        raise PackageBuildError(f"cannot read the history of {opts.source}: {exc}") from exc
    kept, removed = filter_commits(candidates, any_commit=opts.any_commit)
    if not kept:
        raise PackageBuildError(
            f"no commit of {opts.source} passes the filters "
            f"({', '.join(f'{k}: {v}' for k, v in removed.items() if v)})",
            "widen --since, give --any-commit, or pick a repository with small, "
            "well-described commits that change code and tests",
        )
    return _Mined(len(candidates), kept, removed)


def _choose_commits(
    opts: BuildOptions,
    mined: _Mined,
    repo: Path,
    python: tuple[str, str],
    cache_dir: Path,
    progress: Callable[[str], None],
) -> _Chosen:
    """The mined commits whose declarations read and admit the target `python` (X.Y, full
    version), and whose requirements resolve into one of the pinned sets."""
    xy, full = python
    removed = dict(mined.removed)
    progress(f"reading the declarations of {len(mined.kept)} commits")
    pick = Pick(tuple(opts.extras), tuple(opts.groups))
    declarations = _by_declarations(mined.kept, repo, pick, full, removed)
    kept = [c for c in mined.kept if c.sha in declarations]
    progress("resolving requirements")
    sets, uses = _requirement_sets(
        kept, declarations, opts, xy, cache_dir, removed, progress, git_dir=repo
    )
    kept = [c for c in kept if c.sha in uses]
    return _Chosen(kept, sets, uses, removed, declarations[kept[-1].sha].sources)


def _gather_wheels(sets: list[list[str]], folder: Path, opts: BuildOptions) -> dict[str, str]:
    """Download the wheels of every set into `folder`; their names and sha256 hashes."""
    folder.mkdir()
    gathered: set[str] = set()
    for pins in sets:  # one call per set: two sets may pin one project differently
        missing = [p for p in pins if p not in gathered]
        if missing:
            download_wheels(
                missing,
                folder,
                opts.find_links,
                index_url=opts.index_url,
                python_version=opts.python_version,
                platform_name=opts.platform,
            )
        gathered.update(missing)
    wheels = {p.name: sha256_file(p) for p in sorted(folder.iterdir())}
    for path in folder.iterdir():
        path.chmod(0o644)
    return wheels


def _manifest(
    opts: BuildOptions, repo: Path, branch: str, chosen: _Chosen, wheels: dict[str, str]
) -> Manifest:
    """The manifest of the package: its version defaults to the head's date and sha."""
    head = gitsafe.git(["rev-parse", "HEAD"], git_dir=repo).decode().strip()
    when = (
        gitsafe.git(["log", "-1", "--format=%cs", "HEAD"], git_dir=repo)
        .decode()
        .strip()
        .replace("-", "")
    )
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=opts.name or _default_name(opts.source),
        version=opts.version or f"{when}.{head[:12]}",
        description=opts.description,
        license=opts.license,
        python=opts.python,
        requirement_sets=chosen.sets,
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
                requirement_set=chosen.uses[c.sha],
            )
            for c in chosen.commits
        ],
        wheels=wheels,
    )


def _wanted(declaration: Declaration, opts: BuildOptions) -> list[str]:
    """What is resolved for a commit: its declaration, with `-r` replacing what it says of
    the same projects (the operator's word), and pytest (the test command)."""
    overridden = {_project(r) for r in opts.requirements}
    wanted = [r for r in declaration.all if _project(r) not in overridden]
    wanted += opts.requirements
    if not any(_project(r) == "pytest" for r in wanted):
        wanted.append("pytest")
    return wanted


def _requirement_sets(
    kept: list[CandidateCommit],
    declarations: dict[str, Declaration],
    opts: BuildOptions,
    python_version: str,
    cache_dir: Path,
    removed: dict[str, int],
    progress: Callable[[str], None],
    *,
    git_dir: Path,
) -> tuple[list[list[str]], dict[str, int]]:
    """The pinned sets and each commit's index into them, newest commit first (set 0 is
    the newest's). A commit shares the first set that satisfies its declaration, or gets
    a set of its own; past `max_requirement_sets`, or when its declaration does not
    resolve, it is dropped and counted. `max_commits` stops the walk: older commits are
    never resolved. The newest commit's failure to resolve is the build's."""
    overridden = frozenset(_project(r) for r in opts.requirements)
    removed.update({"declares-other-dependencies": 0, "unresolvable-dependencies": 0})
    sets: list[list[str]] = []
    uses: dict[str, int] = {}
    failed: set[tuple[str, ...]] = set()  # declarations that did not resolve: not retried
    for commit in reversed(kept):
        if opts.max_commits is not None and len(uses) >= opts.max_commits:
            break
        declaration = declarations[commit.sha]
        index = next(
            (
                i
                for i, pins in enumerate(sets)
                if satisfied_by(declaration, pins, python_version, overridden)
            ),
            None,
        )
        if index is None and len(sets) >= opts.max_requirement_sets:
            removed["declares-other-dependencies"] += 1
            continue
        wanted = _wanted(declaration, opts)
        if index is None and tuple(wanted) in failed:
            removed["unresolvable-dependencies"] += 1
            continue
        if index is None:
            progress(f"resolving requirement set {len(sets)} (commit {commit.sha[:12]})")
            try:
                pins = _resolve_set(
                    wanted, opts, python_version, cache_dir, _as_of(git_dir, commit.sha, opts)
                )
            except EnvironmentFailed as exc:
                if not sets:  # the newest commit: nothing to build without it
                    raise PackageBuildError(
                        f"the requirements do not resolve to wheels: {exc.output}",
                        "fix the requirements or add wheels to --find-links",
                    ) from exc
                failed.add(tuple(wanted))
                removed["unresolvable-dependencies"] += 1
                continue
            sets.append(pins)
            index = len(sets) - 1
        uses[commit.sha] = index
    return sets, uses


def _resolve_set(
    wanted: list[str],
    opts: BuildOptions,
    python_version: str,
    cache_dir: Path,
    as_of: str | None,
) -> list[str]:
    """Pins for `wanted`: as of `as_of` when given and that resolves, else from the index as
    it is (a mirror may give no upload times, and then nothing is older than any date)."""
    attempts = [as_of, None] if as_of else [None]
    for when in attempts:
        try:
            return resolve(
                wanted,
                opts.find_links,
                cache_dir=cache_dir,
                python_version=python_version,
                python_platform=opts.platform,
                index_url=opts.index_url,
                exclude_newer=when,
            )
        except EnvironmentFailed:
            if when is None:
                raise
    raise AssertionError("unreachable: the last attempt raises or returns")


def _as_of(git_dir: Path, sha: str, opts: BuildOptions) -> str | None:
    """The moment a set is resolved as of: its commit's committer date, so the set holds
    what the project's developers could install then (a build backend of that time reads
    that time's configuration; newer ones may refuse it). None with --latest, and with
    --find-links (a folder has no upload times)."""
    if opts.latest or opts.find_links is not None:
        return None
    out = gitsafe.git(["log", "-1", "--format=%cI", sha], git_dir=git_dir).decode().strip()
    when = datetime.fromisoformat(out).astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _project(requirement: str) -> str:
    return canonicalize_name(re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0])


def _by_declarations(
    kept: list[CandidateCommit],
    git_dir: Path,
    pick: Pick,
    full_version: str,
    removed: dict[str, int],
) -> dict[str, Declaration]:
    """The declaration of each kept commit that reads and whose requires-python admits
    the target (counting the others in `removed`), in commit order. A problem of every
    commit is the build's: the newest one's is raised."""
    removed.update({"unreadable-declarations": 0, "excludes-python": 0})
    usable: dict[str, Declaration] = {}
    refusal, error = None, None
    blobs: dict[str, str] = {}
    for commit in kept:
        try:
            declaration = read_declaration(git_dir, commit.sha, pick, blobs)
        except DeclarationError as exc:
            error = DeclarationError(f"commit {commit.sha[:12]}: {exc.message}", exc.hint)
            removed["unreadable-declarations"] += 1
            continue
        refusal = excludes_python(declaration, full_version)
        if refusal is not None:
            removed["excludes-python"] += 1
            continue
        usable[commit.sha] = declaration
    if not usable and refusal is not None:
        raise PackageBuildError(
            f"refused: {refusal}",
            "build for a Python the project supports (--python-version), or on a box with one",
        )
    if not usable and error is not None:
        raise error
    return usable
