"""`forge package validate`: every check a repo package must pass before Forge trusts it.

Order matters: file rules first (nothing is opened before links and devices are ruled
out), then the manifest, the git repository (through a clean copy), the wheels, and
last the dry run, which runs only when everything else passed: the newest commit's
tests collected (`--collect-only`) by the harness's own runner, in the environment
grading will use (harness.testrun.run_tests, harness.envs.ensure_env), from a spec made
from the manifest (harness.spec.manifest_spec); there is no second way to run them.

The git check also reads the tree of every listed commit and of its parent (the two
trees grading checks out) and refuses what Forge cannot check out safely: entries named
`.git`, links that are absolute or lead out of the tree, and test files that are links.
A package with such a commit is refused here, not when grading reaches the commit.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.specifiers import SpecifierSet

from appliance.config import Config, PackageLimits
from appliance.harness.checkout import CheckoutError, worktree
from appliance.harness.envs import EnvironmentBroken, ensure_env
from appliance.harness.spec import changed_test_files, is_test_path, manifest_spec
from appliance.harness.testrun import TestRun, run_tests
from appliance.packages import gitsafe
from appliance.packages.environment import EnvironmentFailed, resolve
from appliance.packages.manifest import MANIFEST_NAME, Manifest, ManifestError, read_manifest
from appliance.packages.problems import Problem
from appliance.packages.rules import check_files
from appliance.packages.wheels import check_wheels
from appliance.records import as_json

CHECKS = ("files", "manifest", "git", "wheels", "dry_run")
# Keys a package's repo/config may hold; anything else (core.fsmonitor, hooksPath,
# filters, includes, textconv, …) rejects the package.
ALLOWED_CONFIG = {
    "core.repositoryformatversion": {"0", "1"},
    "core.bare": {"true"},
    "core.filemode": None,
    "core.ignorecase": None,
    "core.precomposeunicode": None,
    "core.logallrefupdates": None,
    "core.symlinks": None,
    "remote.origin.url": None,
    "remote.origin.fetch": None,
    "remote.origin.mirror": None,
}
# Names git refuses to check out (any case; Windows and macOS spell .git these ways too),
# and names git refuses as links.
GIT_NAMES = {".git", "git~1"}
NO_LINK_NAMES = {".gitmodules", ".gitattributes", ".gitignore", ".mailmap"}
MAX_LINK_HOPS = 40  # as the kernel's ELOOP
TREE_DETAILS = 5  # hazards named per commit; the rest are counted
DRY_RUN_FIX = "make the test suite collect offline with only the listed requirements"


@dataclass
class _Checking:
    """What the checks found so far: filled in while they run (validate's own state)."""

    package: Path
    manifest: Manifest | None = None
    manifest_sha256: str | None = None
    problems: list[Problem] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CHECKS, "skipped"))

    def record(self, check: str, problems: list[Problem]) -> bool:
        self.problems.extend(problems)
        self.checks[check] = "fail" if problems else "pass"
        return not problems


@dataclass(frozen=True)
class ValidationReport:
    """What validation found: each check's verdict (pass, fail, skipped) and every problem."""

    package: Path
    manifest: Manifest | None
    manifest_sha256: str | None
    problems: tuple[Problem, ...]
    checks: dict[str, str]

    @property
    def ok(self) -> bool:
        """Every check ran and passed."""
        return not self.problems and all(v == "pass" for v in self.checks.values())

    def to_dict(self) -> dict:
        keys = ("package", "name", "version", "manifest_sha256", "ok", "checks", "problems")
        name = self.manifest.name if self.manifest else None
        version = self.manifest.version if self.manifest else None
        return as_json(self, *keys, name=name, version=version)


def _check_manifest(root: Path, report: _Checking, limits: PackageLimits) -> bool:
    try:
        report.manifest, report.manifest_sha256 = read_manifest(root)
    except ManifestError as exc:
        return report.record(
            "manifest",
            [
                Problem("manifest", MANIFEST_NAME, msg, "fix manifest.json or rebuild the package")
                for msg in exc.problems
            ],
        )
    except OSError as exc:
        return report.record(
            "manifest",
            [
                Problem(
                    "manifest",
                    MANIFEST_NAME,
                    f"cannot read: {exc.strerror}",
                    "copy the package again",
                )
            ],
        )
    problems = []
    limit = limits.max_commits
    if len(report.manifest.commits) > limit:
        problems.append(
            Problem(
                "too-many-commits",
                MANIFEST_NAME,
                f"{len(report.manifest.commits)} commits; the limit is {limit}",
                "rebuild with --max-commits, or raise packages.max_commits in forge.toml",
            )
        )
    here = platform.python_version()
    if not SpecifierSet(report.manifest.python).contains(here, prereleases=True):
        problems.append(
            Problem(
                "python",
                MANIFEST_NAME,
                f"needs Python {report.manifest.python}; this box runs {here}",
                "rebuild the package for this Python",
            )
        )
    return report.record("manifest", problems)


def _check_git(
    root: Path, manifest: Manifest | None, scratch: Path
) -> tuple[list[Problem], Path | None]:
    repo = root / "repo"
    problems = _config_problems(repo)
    if problems:
        return problems, None
    copy = scratch / "repo.git"
    try:
        gitsafe.clean_copy(repo, copy)
    except (gitsafe.GitError, OSError) as exc:
        return [
            Problem(
                "git-corrupt",
                "repo",
                f"the repository is damaged: {exc}",
                "copy the package again or rebuild it",
            )
        ], None
    if manifest is None:
        return [], copy
    problems = _commit_problems(copy, manifest)
    if not problems:
        try:
            problems = _check_trees(copy, manifest)
        except gitsafe.GitError as exc:
            problems = [
                Problem(
                    "git-corrupt",
                    "repo",
                    f"the commits' trees cannot be read: {exc}",
                    "copy the package again or rebuild it",
                )
            ]
    return problems, copy


def _config_problems(repo: Path) -> list[Problem]:
    """Keys of repo/config outside ALLOWED_CONFIG, or why it cannot be read."""
    problems = []
    try:
        for key, value in gitsafe.config_keys(repo / "config"):
            allowed = ALLOWED_CONFIG.get(key, ())
            if allowed == ():
                problems.append(
                    Problem(
                        "git-config",
                        "repo/config",
                        f"key {key!r} is not allowed",
                        "rebuild the package; repo/config may hold only core "
                        "format keys and remote.origin",
                    )
                )
            elif allowed is not None and value.lower() not in allowed:
                problems.append(
                    Problem(
                        "git-config",
                        "repo/config",
                        f"{key} = {value!r} is not allowed",
                        "the repository must be bare (git clone --bare)",
                    )
                )
    except gitsafe.GitError as exc:
        problems.append(
            Problem(
                "git-config",
                "repo/config",
                f"unreadable: {exc.stderr.strip()}",
                "rebuild the package",
            )
        )
    return problems


def _commit_problems(copy: Path, manifest: Manifest) -> list[Problem]:
    """Commits of the manifest the repository lacks, or whose parent it says otherwise."""
    problems = []
    parents = gitsafe.commit_parents(copy, [c.sha for c in manifest.commits])
    for commit in manifest.commits:
        got = parents[commit.sha]
        if got is None:
            problems.append(
                Problem(
                    "commit-missing",
                    "repo",
                    f"commit {commit.sha} in the manifest is not in the repository",
                    "rebuild the package; the repository and manifest disagree",
                )
            )
        elif not got or got[0] != commit.parent:
            problems.append(
                Problem(
                    "commit-parent",
                    "repo",
                    f"commit {commit.sha}: manifest says parent {commit.parent}, "
                    f"the repository says {got[0] if got else 'none'}",
                    "rebuild the package; the repository and manifest disagree",
                )
            )
    return problems


def _link_escapes(link: str, target: str, links: dict[str, str]) -> bool:
    """Whether the link at `link` (pointing at `target`) resolves outside the tree, or
    never resolves; `links` maps every link's path in the tree to its target."""
    if target.startswith("/"):
        return True
    todo = target.split("/")
    where = link.split("/")[:-1]  # the folder holding the link
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not where:
                return True
            where.pop()
            continue
        here = "/".join([*where, part])
        if here in links:
            hops += 1
            if hops > MAX_LINK_HOPS or links[here].startswith("/"):
                return True
            todo = links[here].split("/") + todo  # relative to the folder holding it
            continue
        where.append(part)
    return False


def _tree_hazards(repo: Path, sha: str, tests: tuple[str, ...], cache: dict) -> list[str]:
    """Why commit `sha`'s tree cannot be checked out safely (empty when it can), with
    `tests` the test files grading lays over it."""
    if sha not in cache:
        entries = gitsafe.tree_entries(repo, sha, unusual_only=True)
        links = {e.path: e.object for e in entries if e.is_link}
        targets = gitsafe.read_blobs(repo, sorted(set(links.values())))
        links = {
            path: targets.get(obj, b"").decode("utf-8", "surrogateescape")
            for path, obj in links.items()
        }
        found = []
        for entry in entries:
            parts = entry.path.split("/")
            name = parts[-1].lower().rstrip(". ")
            if name in GIT_NAMES or any(p in ("", ".", "..") for p in parts):
                found.append(f"a tree entry {entry.path!r} (git refuses to check it out)")
            elif not entry.is_link:
                continue
            elif name in NO_LINK_NAMES:
                found.append(f"{entry.path!r} is a link (git refuses to check it out)")
            elif links[entry.path].startswith("/"):
                found.append(f"{entry.path!r} is an absolute link (to {links[entry.path][:200]!r})")
            elif _link_escapes(entry.path, links[entry.path], links):
                found.append(f"{entry.path!r} is a link leading out of the tree")
            elif is_test_path(entry.path):
                found.append(f"the test file {entry.path!r} is a link")
        cache[sha] = (found, set(links))
    found, links = cache[sha]
    found = list(found)
    for test in tests:
        parts = test.split("/")
        folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if any(f in links for f in folders):
            found.append(f"the test file {test!r} lies under a link")
    return found


def _check_trees(repo: Path, manifest: Manifest) -> list[Problem]:
    """One Problem per listed commit whose tree, or whose parent's, is unsafe."""
    problems = []
    cache: dict = {}
    for commit in manifest.commits:
        tests = changed_test_files(repo, commit.parent, commit.sha)
        found = [*_tree_hazards(repo, commit.sha, tests, cache)]
        found += [f"at its parent: {h}" for h in _tree_hazards(repo, commit.parent, tests, cache)]
        if not found:
            continue
        more = len(found) - TREE_DETAILS
        problems.append(
            Problem(
                "git-tree",
                "repo",
                f"commit {commit.sha[:12]} cannot be checked out safely: "
                + "; ".join(found[:TREE_DETAILS])
                + (f"; and {more} more" if more > 0 else ""),
                "leave the commit out of the package, or rewrite the history without "
                "those entries, then rebuild the package",
            )
        )
    return problems


def _check_requirements(root: Path, manifest: Manifest, cache: Path) -> list[Problem]:
    """Every requirement set must resolve from packages/ alone; a problem names the set."""
    problems = []
    several = len(manifest.requirement_sets) > 1
    for index, pins in enumerate(manifest.requirement_sets):
        try:
            resolve(pins, root / "packages", cache_dir=cache)
        except EnvironmentFailed as exc:
            users = len(manifest.commits_using(index))
            what = (
                f"requirement set {index} (used by {users} commit{'' if users == 1 else 's'}) "
                "does not resolve"
                if several
                else "the requirements do not resolve"
            )
            problems.append(
                Problem(
                    "wheel-missing",
                    "packages",
                    f"{what} from packages/ alone: " + exc.output.strip()[-1500:],
                    "add the missing wheels (forge package build downloads them all)",
                )
            )
    return problems


def _dry_run(
    root: Path, manifest: Manifest, manifest_sha256: str, repo_copy: Path, config: Config
) -> list[Problem]:
    """Collect the newest commit's tests as grading would run them; [] when they collect."""
    newest = manifest.commits[-1].sha
    timeout = config.settings.packages.dry_run_timeout_s
    spec = replace(
        manifest_spec(manifest, manifest_sha256, root, repo_copy, newest), test_timeout_s=timeout
    )
    try:
        # The environment grading uses (same key): built once here, reused after ingest.
        env = ensure_env(config, spec)
    except EnvironmentBroken as exc:
        return [
            Problem(
                "dry-run-env",
                "packages",
                exc.message,
                "check the wheels match this Python and platform",
            )
        ]
    try:
        with worktree(config, repo_copy, newest, label=f"{newest[:12]}-dry-run") as work:
            run = run_tests(config, spec, work, env, collect_only=True)
    except CheckoutError as exc:
        # The tree checks refuse what would fail here; this is the last line.
        return [
            Problem(
                "git-tree",
                "repo",
                exc.message,
                "rewrite the history without the entries named, then rebuild the package",
            )
        ]
    return _collection_problems(run, spec.test_command, newest, timeout)


def _collection_problems(
    run: TestRun, test_command: tuple[str, ...], sha: str, timeout: float
) -> list[Problem]:
    """What a collect-only run says is wrong with the package ([] when nothing)."""
    if run.status == "sandbox_error":
        message, _, hint = run.detail.partition("\n  → ")  # a SandboxError, as str() gives it
        return [Problem("sandbox", "", message, hint or "install bubblewrap")]
    if run.status == "timeout":
        return [
            Problem(
                "dry-run-timeout",
                "manifest.json",
                f"collecting tests took longer than {timeout:g} s",
                DRY_RUN_FIX,
            )
        ]
    if run.status == "ok":
        return []
    tail = "\n".join(run.output_tail.strip().splitlines()[-15:])
    if run.network:
        return [
            Problem(
                "dry-run-network",
                "manifest.json",
                f"the test command tried to reach the network (there is none):\n{tail}",
                "tests must run offline; remove network access from the test suite",
            )
        ]
    if run.status == "collection_error" and run.collected:
        # Some modules import, some do not (test data from a submodule, an optional
        # dependency): grading leaves those out, commit by commit; the package is usable.
        return []
    if run.status == "no_tests":
        what = "collected no tests"
    elif run.status == "tampered":
        what = f"gave results that disagree: {run.detail}"
    elif run.status == "crashed":  # its detail is about the missing report: the tail says why
        what = f"exited {run.returncode}"
    else:
        what = f"exited {run.returncode} ({run.detail})"
    argv = " ".join([*test_command, "--collect-only"])
    return [
        Problem("dry-run", "manifest.json", f"`{argv}` at {sha[:12]} {what}:\n{tail}", DRY_RUN_FIX)
    ]


def validate(package: Path, config: Config, *, dry_run: bool = True) -> ValidationReport:
    """Run every check on the package directory; the report lists every problem found."""
    report = _Checking(package=Path(package).absolute())
    _run_checks(report, config, dry_run)
    return ValidationReport(
        report.package,
        report.manifest,
        report.manifest_sha256,
        tuple(report.problems),
        dict(report.checks),
    )


def _run_checks(report: _Checking, config: Config, dry_run: bool) -> None:
    """The checks in order, each only when what it opens passed the ones before."""
    root = report.package
    limits = config.settings.packages
    if not report.record("files", check_files(root, limits)):
        # Nothing more is opened when the file rules fail, except a plain manifest.json
        # (a regular file is safe to read), so the report can name the package.
        manifest_path = root / MANIFEST_NAME
        if manifest_path.is_file() and not manifest_path.is_symlink():
            _check_manifest(root, report, limits)
        return
    manifest_ok = _check_manifest(root, report, limits)
    manifest = report.manifest if manifest_ok else None
    config.dir("envs").mkdir(parents=True, exist_ok=True)
    cache = config.dir("envs") / ".uv-cache"
    with tempfile.TemporaryDirectory(prefix="validate-", dir=config.dir("envs")) as tmp:
        scratch = Path(tmp)
        git_problems, repo_copy = _check_git(root, manifest, scratch)
        git_ok = report.record("git", git_problems)
        if manifest is None:
            return
        wheel_problems = check_wheels(root / "packages", manifest.wheels, limits)
        if not wheel_problems:
            wheel_problems = _check_requirements(root, manifest, cache)
        wheels_ok = report.record("wheels", wheel_problems)
        if not (git_ok and wheels_ok and dry_run):
            return
        report.record(
            "dry_run", _dry_run(root, manifest, report.manifest_sha256, repo_copy, config)
        )
