"""File rules: what may be on disk in a repo package, checked without reading content.

Only lstat and directory listings are used, so a hostile package (symlinks, devices,
hard links, names that escape, folders nested thousands deep) is judged before anything
in it is opened or copied.
"""

from __future__ import annotations

import os
import re
import stat
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


def check_files(root: Path, limits: PackageLimits, *, read_magic: bool = True) -> list[Problem]:
    """Check every entry under `root` against the file rules; return what breaks them.

    With `read_magic=False` nothing is opened (used on a package not yet copied in).
    """
    problems: list[Problem] = []
    total = 0

    def bad(rule: str, rel: str, message: str, fix: str) -> None:
        problems.append(Problem(rule, rel, message, fix))

    try:
        top = os.lstat(root)
    except OSError as exc:
        return [
            Problem("missing", "", f"cannot read the package: {exc.strerror}", "check the path")
        ]
    if not stat.S_ISDIR(top.st_mode):
        return [
            Problem(
                "not-a-directory",
                "",
                "a repo package is a directory",
                "copy the whole package folder",
            )
        ]

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = path.relative_to(root).as_posix()
            if not SAFE_NAME.match(name):
                bad(
                    "bad-name",
                    repr(rel),
                    "file name holds control characters",
                    "rename or remove it",
                )
                continue
            parts = rel.split("/")
            if len(parts) > MAX_DEPTH or len(rel) > MAX_PATH:
                bad(
                    "too-deep",
                    rel[:200] + ("…" if len(rel) > 200 else ""),
                    f"{len(parts)} levels, {len(rel)} characters; the limits are "
                    f"{MAX_DEPTH} levels and {MAX_PATH} characters",
                    "rebuild the package with `forge package build`",
                )
                if name in dirnames:
                    dirnames.remove(name)  # not descended into
                continue
            try:
                st = os.lstat(path)
            except OSError as exc:
                bad("unreadable", rel, f"cannot be read: {exc.strerror}", "copy the package again")
                if name in dirnames:
                    dirnames.remove(name)
                continue
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink(path)
                bad(
                    "symlink",
                    rel,
                    f"symbolic link (to {target!r}); links are never followed",
                    "replace the link with the file it points to, or remove it",
                )
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                bad("special-file", rel, "device, FIFO or socket", "remove it")
                continue
            if len(parts) == 1 and name not in TOP_LEVEL:
                bad(
                    "unexpected-entry",
                    rel,
                    "a package holds only manifest.json, repo/, packages/ (and READY)",
                    "remove it",
                )
                continue
            if stat.S_ISDIR(mode):
                if parts[0] == "packages" and len(parts) > 1:
                    bad(
                        "unexpected-entry",
                        rel,
                        "packages/ holds wheel files only, no folders",
                        "move the wheels to packages/ directly",
                    )
                elif parts[0] == "repo" and len(parts) > 1:
                    inner = "/".join(parts[1:])
                    if not REPO_DIRS.match(inner):
                        bad(
                            "git-structure",
                            rel,
                            "not part of a bare git repository",
                            "rebuild the package with `forge package build`",
                        )
                    elif inner == "hooks" and any(os.scandir(path)):
                        bad(
                            "git-hooks",
                            rel,
                            "the repository carries hooks",
                            "remove repo/hooks/; hooks never run, packages must not carry any",
                        )
                elif parts[0] in ("manifest.json", "READY"):
                    bad("unexpected-entry", rel, "should be a file", "rebuild the package")
                continue
            # regular file
            if st.st_nlink > 1:
                bad(
                    "hardlink",
                    rel,
                    f"hard link ({st.st_nlink} names for one file)",
                    "copy the package without hard links (cp without -l; git clone --no-hardlinks)",
                )
            size = st.st_size
            total += size
            if size > limits.max_file_mb * MB:
                bad(
                    "file-too-large",
                    rel,
                    f"{size / MB:.1f} MB; the limit is {limits.max_file_mb:g} MB per file",
                    "leave the file out, or raise packages.max_file_mb in forge.toml",
                )
            in_packages = parts[0] == "packages"
            if in_packages:
                lowered = name.lower()
                if lowered.endswith(SDIST_SUFFIXES):
                    bad(
                        "sdist",
                        rel,
                        "source distribution; installing it would run its code",
                        "replace it with a wheel (pip wheel / pip download --only-binary=:all:)",
                    )
                elif not lowered.endswith(".whl"):
                    bad("not-a-wheel", rel, "packages/ holds .whl files only", "remove it")
                continue
            if mode & 0o111:
                bad(
                    "executable",
                    rel,
                    "executable file outside packages/",
                    "remove the execute bit (chmod -x) or the file",
                )
            if parts[0] == "repo" and len(parts) > 1:
                inner = "/".join(parts[1:])
                if inner.startswith("hooks/"):
                    continue  # reported once, on the directory
                if inner in ("objects/info/alternates", "objects/info/http-alternates"):
                    bad(
                        "git-alternates",
                        rel,
                        "alternates make git read objects from outside the package",
                        "repack the repository without alternates (git repack -a -d)",
                    )
                elif not REPO_FILES.match(inner):
                    bad(
                        "git-structure",
                        rel,
                        "not part of a bare git repository",
                        "rebuild the package with `forge package build`",
                    )
                elif not inner.startswith("objects/") and read_magic and _is_archive_content(path):
                    bad("archive", rel, "archive content in a git metadata file", "remove it")
                continue  # git objects are compressed by git itself; that is no archive
            if name.lower().endswith(ARCHIVE_SUFFIXES) or (
                read_magic and _is_archive_content(path)
            ):
                bad("archive", rel, "archive outside packages/", "remove it")
    if total > limits.max_total_mb * MB:
        bad(
            "package-too-large",
            "",
            f"{total / MB:.0f} MB in all; the limit is {limits.max_total_mb:g} MB",
            "split the package, or raise packages.max_total_mb in forge.toml",
        )
    for required in ("manifest.json", "repo", "packages"):
        if not os.path.lexists(root / required):
            bad(
                "missing",
                required,
                "required entry is missing",
                "a package is manifest.json + repo/ + packages/; rebuild it",
            )
    return problems


def package_size(root: Path) -> int:
    """Bytes in regular files under `root` (links not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
