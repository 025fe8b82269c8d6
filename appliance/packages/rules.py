"""File rules: what may be on disk in a repo package, checked without reading content.

Only lstat and directory listings are used, so a hostile package (symlinks, devices,
hard links, names that escape, folders nested thousands deep) is judged before anything
in it is opened or copied.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from appliance.config import PackageLimits
from appliance.packages.problems import Problem

MB = 1 << 20
TOP_LEVEL = {"manifest.json", "repo", "packages", "READY"}
ARCHIVE_SUFFIXES = (
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".whl", ".egg", ".jar",
)  # fmt: skip
ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf", b"Rar!")
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".tar")
# Git's own structure inside repo/; anything else there is refused.
REPO_FILES = re.compile(
    r"^(HEAD|config|description|packed-refs|info/exclude"
    r"|refs/.+"
    r"|objects/[0-9a-f]{2}/[0-9a-f]{38}([0-9a-f]{24})?"
    r"|objects/pack/pack-[0-9a-f]{40}([0-9a-f]{24})?\.(pack|idx|rev|bitmap|mtimes)"
    r"|objects/info/(packs|commit-graph|commit-graphs/.+))$"
)
REPO_DIRS = re.compile(
    r"^(refs(/.+)?|objects|objects/[0-9a-f]{2}|objects/pack|objects/info"
    r"|objects/info/commit-graphs|info|hooks|branches)$"
)
SAFE_NAME = re.compile(r"^[^\x00-\x1f\x7f]+$")
# Folders deep and characters long a path in a package may be: git's layout needs a few
# levels (nested branch names a few more); deeper trees only serve to exhaust recursion
# (os.walk, copytree) or PATH_MAX, and are not descended into.
MAX_DEPTH = 32
MAX_PATH = 1024


def _is_archive_content(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return any(head.startswith(m) for m in ARCHIVE_MAGIC)


@dataclass(frozen=True)
class _Seen:
    """What one entry under the package root adds to the report."""

    problems: tuple[Problem, ...] = ()
    size: int = 0  # bytes of a regular file, counted toward the package's total
    descend: bool = True  # False: a folder the walk must not enter


@dataclass(frozen=True)
class _Entry:
    """An entry that was named safely and lstat'ed: what the per-kind rules look at."""

    path: Path
    rel: str  # relative to the package root, with "/"
    parts: tuple[str, ...]  # rel split into its folders; parts[0] is the top-level entry
    st: os.stat_result

    @property
    def inner(self) -> str | None:
        """The path inside repo/, or None for an entry that is not under it."""
        if self.parts[0] == "repo" and len(self.parts) > 1:
            return "/".join(self.parts[1:])
        return None


def check_files(root: Path, limits: PackageLimits, *, read_magic: bool = True) -> list[Problem]:
    """Check every entry under `root` against the file rules; return what breaks them.

    With `read_magic=False` nothing is opened (used on a package not yet copied in).
    """
    refused = _check_root(root)
    if refused is not None:
        return [refused]
    problems: list[Problem] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            seen = _check_entry(root, Path(dirpath) / name, limits, read_magic)
            problems += seen.problems
            total += seen.size
            if not seen.descend and name in dirnames:
                dirnames.remove(name)
    problems += _check_total(total, limits)
    problems += _check_required(root)
    return problems


def _check_root(root: Path) -> Problem | None:
    """Why `root` cannot be a package at all, or None when it is a directory."""
    try:
        top = os.lstat(root)
    except OSError as exc:
        return Problem("missing", "", f"cannot read the package: {exc.strerror}", "check the path")
    if not stat.S_ISDIR(top.st_mode):
        return Problem(
            "not-a-directory", "", "a repo package is a directory", "copy the whole package folder"
        )
    return None


def _check_entry(root: Path, path: Path, limits: PackageLimits, read_magic: bool) -> _Seen:
    """The rules one entry breaks: its name and depth first, then its kind, then the rules
    of the place it is in (a folder's or a regular file's)."""
    rel = path.relative_to(root).as_posix()
    if not SAFE_NAME.match(path.name):
        # Still walked into: what lies below is judged on its own names.
        bad = Problem(
            "bad-name", repr(rel), "file name holds control characters", "rename or remove it"
        )
        return _Seen((bad,))
    parts = tuple(rel.split("/"))
    if len(parts) > MAX_DEPTH or len(rel) > MAX_PATH:
        return _Seen((_too_deep(rel, len(parts)),), descend=False)
    try:
        st = os.lstat(path)
    except OSError as exc:
        problem = Problem(
            "unreadable", rel, f"cannot be read: {exc.strerror}", "copy the package again"
        )
        return _Seen((problem,), descend=False)
    entry = _Entry(path, rel, parts, st)
    refused = _check_kind(entry)
    if refused is not None:
        return _Seen((refused,))
    if stat.S_ISDIR(st.st_mode):
        return _Seen(tuple(_check_folder(entry)))
    return _Seen(tuple(_check_file(entry, limits, read_magic)), size=st.st_size)


def _too_deep(rel: str, levels: int) -> Problem:
    return Problem(
        "too-deep",
        rel[:200] + ("…" if len(rel) > 200 else ""),
        f"{levels} levels, {len(rel)} characters; the limits are "
        f"{MAX_DEPTH} levels and {MAX_PATH} characters",
        "rebuild the package with `forge package build`",
    )


def _check_kind(entry: _Entry) -> Problem | None:
    """Refuses what is neither a regular file nor a folder, and any top-level entry a
    package does not have; None lets the entry on to the rules of its place."""
    mode = entry.st.st_mode
    if stat.S_ISLNK(mode):
        return Problem(
            "symlink",
            entry.rel,
            f"symbolic link (to {os.readlink(entry.path)!r}); links are never followed",
            "replace the link with the file it points to, or remove it",
        )
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return Problem("special-file", entry.rel, "device, FIFO or socket", "remove it")
    if len(entry.parts) == 1 and entry.parts[0] not in TOP_LEVEL:
        return Problem(
            "unexpected-entry",
            entry.rel,
            "a package holds only manifest.json, repo/, packages/ (and READY)",
            "remove it",
        )
    return None


def _check_folder(entry: _Entry) -> list[Problem]:
    """A folder is allowed at the top, as git's layout inside repo/, and nowhere else."""
    rel, area = entry.rel, entry.parts[0]
    if area == "packages" and len(entry.parts) > 1:
        return [
            Problem(
                "unexpected-entry",
                rel,
                "packages/ holds wheel files only, no folders",
                "move the wheels to packages/ directly",
            )
        ]
    inner = entry.inner
    if inner is not None and not REPO_DIRS.match(inner):
        return [_not_git(rel)]
    if inner == "hooks" and any(os.scandir(entry.path)):
        return [
            Problem(
                "git-hooks",
                rel,
                "the repository carries hooks",
                "remove repo/hooks/; hooks never run, packages must not carry any",
            )
        ]
    if area in ("manifest.json", "READY"):
        return [Problem("unexpected-entry", rel, "should be a file", "rebuild the package")]
    return []


def _not_git(rel: str) -> Problem:
    return Problem(
        "git-structure",
        rel,
        "not part of a bare git repository",
        "rebuild the package with `forge package build`",
    )


def _check_file(entry: _Entry, limits: PackageLimits, read_magic: bool) -> list[Problem]:
    """A regular file: one name and a size within the limit wherever it is; then a wheel
    in packages/, git's own file in repo/, and no executable or archive elsewhere."""
    problems = _check_links_and_size(entry, limits)
    if entry.parts[0] == "packages":
        return problems + _check_wheel_name(entry)
    if entry.st.st_mode & 0o111:
        problems.append(
            Problem(
                "executable",
                entry.rel,
                "executable file outside packages/",
                "remove the execute bit (chmod -x) or the file",
            )
        )
    if entry.inner is not None:
        return problems + _check_repo_file(entry, read_magic)
    if entry.path.name.lower().endswith(ARCHIVE_SUFFIXES) or (
        read_magic and _is_archive_content(entry.path)
    ):
        problems.append(Problem("archive", entry.rel, "archive outside packages/", "remove it"))
    return problems


def _check_links_and_size(entry: _Entry, limits: PackageLimits) -> list[Problem]:
    problems = []
    links, size = entry.st.st_nlink, entry.st.st_size
    if links > 1:
        problems.append(
            Problem(
                "hardlink",
                entry.rel,
                f"hard link ({links} names for one file)",
                "copy the package without hard links (cp without -l; git clone --no-hardlinks)",
            )
        )
    if size > limits.max_file_mb * MB:
        problems.append(
            Problem(
                "file-too-large",
                entry.rel,
                f"{size / MB:.1f} MB; the limit is {limits.max_file_mb:g} MB per file",
                "leave the file out, or raise packages.max_file_mb in forge.toml",
            )
        )
    return problems


def _check_wheel_name(entry: _Entry) -> list[Problem]:
    """packages/ holds wheels: an sdist would run its code when installed."""
    lowered = entry.path.name.lower()
    if lowered.endswith(SDIST_SUFFIXES):
        return [
            Problem(
                "sdist",
                entry.rel,
                "source distribution; installing it would run its code",
                "replace it with a wheel (pip wheel / pip download --only-binary=:all:)",
            )
        ]
    if not lowered.endswith(".whl"):
        return [Problem("not-a-wheel", entry.rel, "packages/ holds .whl files only", "remove it")]
    return []


def _check_repo_file(entry: _Entry, read_magic: bool) -> list[Problem]:
    """A file inside repo/ is one of git's own; git objects are compressed by git itself,
    which is no archive."""
    inner = entry.inner or ""
    if inner.startswith("hooks/"):
        return []  # reported once, on the directory
    if inner in ("objects/info/alternates", "objects/info/http-alternates"):
        return [
            Problem(
                "git-alternates",
                entry.rel,
                "alternates make git read objects from outside the package",
                "repack the repository without alternates (git repack -a -d)",
            )
        ]
    if not REPO_FILES.match(inner):
        return [_not_git(entry.rel)]
    if not inner.startswith("objects/") and read_magic and _is_archive_content(entry.path):
        return [
            Problem("archive", entry.rel, "archive content in a git metadata file", "remove it")
        ]
    return []


def _check_total(total: int, limits: PackageLimits) -> list[Problem]:
    if total <= limits.max_total_mb * MB:
        return []
    return [
        Problem(
            "package-too-large",
            "",
            f"{total / MB:.0f} MB in all; the limit is {limits.max_total_mb:g} MB",
            "split the package, or raise packages.max_total_mb in forge.toml",
        )
    ]


def _check_required(root: Path) -> list[Problem]:
    return [
        Problem(
            "missing",
            required,
            "required entry is missing",
            "a package is manifest.json + repo/ + packages/; rebuild it",
        )
        for required in ("manifest.json", "repo", "packages")
        if not os.path.lexists(root / required)
    ]
