"""Git run so that nothing from a package's git metadata is trusted.

A package's `repo/` is never used in place. `clean_copy` builds a fresh bare repository
with Forge's own config and copies in only objects and refs; hooks, config, info/ and
alternates from the package never reach it. Every git command Forge runs goes through
`git()`, which ignores system and user config and forces hooks and fsmonitor off.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ForgeError

# Command-line config outranks every config file git reads.
_OVERRIDES = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.sshCommand=false",
    "core.gitProxy=",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "safe.directory=*",
    "uploadpack.packObjectsHook=",
    "gc.auto=0",
    "maintenance.auto=false",
)


class GitError(ForgeError):
    """A git command failed; `returncode` and `stderr` say how."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} exited {returncode}: {stderr.strip()[:2000]}")
        self.returncode = returncode
        self.stderr = stderr


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_ATTR_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
    )
    return env


def git(
    args: Sequence[str],
    *,
    git_dir: Path | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    timeout: float = 600,
) -> bytes:
    """Run git with untrusted-config protections; return stdout, raise GitError."""
    cmd = ["git"]
    for item in _OVERRIDES:
        cmd += ["-c", item]
    if git_dir is not None:
        cmd.append(f"--git-dir={git_dir}")
    cmd += list(args)
    proc = subprocess.run(
        cmd, cwd=cwd, input=input, capture_output=True, env=git_env(), timeout=timeout
    )
    if proc.returncode != 0:
        raise GitError(args, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout


def config_keys(config_file: Path) -> list[tuple[str, str]]:
    """The (key, value) pairs of a git config file, read without following includes."""
    out = git(["config", "--file", str(config_file), "--no-includes", "--list", "-z"])
    pairs = []
    for item in out.split(b"\0"):
        if not item:
            continue
        key, _, value = item.partition(b"\n")
        pairs.append((key.decode(errors="replace").lower(), value.decode(errors="replace")))
    return pairs


def init_bare(dest: Path) -> None:
    """A new bare repository with no hooks, no template and Forge's minimal config."""
    git(["init", "--bare", "--quiet", "--template=", str(dest)])
    (dest / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"
    )


def clean_copy(package_repo: Path, dest: Path) -> None:
    """Copy objects and refs of `package_repo` into a new bare repository at `dest`.

    Only object and ref files are copied (the caller has checked the tree holds no
    links); alternates, hooks, config and info/ are left behind. Then the copy is
    checked with `git fsck`, which also rejects malformed objects.
    """
    init_bare(dest)
    src_objects = package_repo / "objects"
    for sub in sorted(src_objects.iterdir()) if src_objects.is_dir() else []:
        if sub.name == "info":
            continue  # alternates and http-alternates live here
        shutil.copytree(sub, dest / "objects" / sub.name, symlinks=True, dirs_exist_ok=True)
    if (package_repo / "refs").is_dir():
        shutil.copytree(package_repo / "refs", dest / "refs", symlinks=True, dirs_exist_ok=True)
    if (package_repo / "packed-refs").is_file():
        shutil.copyfile(package_repo / "packed-refs", dest / "packed-refs")
    head = (package_repo / "HEAD").read_text(errors="replace").strip()
    if head.startswith("ref: refs/heads/") and "\n" not in head:
        (dest / "HEAD").write_text(head + "\n")
    git(["fsck", "--no-dangling", "--no-progress"], git_dir=dest)


def commit_parents(git_dir: Path, shas: Sequence[str]) -> dict[str, list[str] | None]:
    """Map each sha to its parents' shas, or None when it is not a commit in the repo."""
    out = git(
        ["cat-file", "--batch"],
        git_dir=git_dir,
        input="".join(f"{s}\n" for s in shas).encode(),
    )
    result: dict[str, list[str] | None] = {}
    pos = 0
    for sha in shas:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode()
        pos = end + 1
        parts = header.split()
        if len(parts) < 3 or parts[1] == "missing":
            result[sha] = None
            continue
        size = int(parts[2])
        body = out[pos : pos + size]
        pos += size + 1
        if parts[1] != "commit":
            result[sha] = None
            continue
        parents = []
        for line in body.split(b"\n"):
            if not line:
                break
            if line.startswith(b"parent "):
                parents.append(line[7:].decode())
        result[sha] = parents
    return result


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a commit's tree, as `git ls-tree -r -t` lists it."""

    mode: str  # "100644", "100755", "120000" (a symbolic link), "040000", "160000" (gitlink)
    kind: str  # blob | tree | commit
    object: str
    path: str  # full path from the root, "/"-separated, undecodable bytes kept as surrogates

    @property
    def is_link(self) -> bool:
        return self.mode == "120000"


# What the tree checks look at: a link (mode 120000), or a path with a part that starts
# with "." or holds "~" (.git, git~1, ..), or an empty part. Plain files and folders,
# nearly all of a tree, match none of these and are never decoded.
_UNUSUAL = (b"\t.", b"/.", b"~", b"//", b"\t/", b"/\0", b"\x00120000 ")


def tree_entries(git_dir: Path, sha: str, *, unusual_only: bool = False) -> list[TreeEntry]:
    """Every entry of commit `sha`'s tree, folders included, at any depth; with
    `unusual_only`, only links and paths with a part that starts with "." or holds "~"
    or is empty (what the tree checks look at)."""
    out = git(["ls-tree", "-r", "-t", "-z", "--full-tree", sha], git_dir=git_dir)
    if unusual_only:
        # Each match lies inside one NUL-terminated item; take that whole item, once.
        starts = {0} if out.startswith(b"120000 ") else set()
        for marker in _UNUSUAL:  # bytes.find: C speed, and the markers are rare
            at = out.find(marker)
            while at >= 0:
                starts.add(out.rfind(b"\0", 0, at + 1) + 1)
                at = out.find(marker, at + 1)
        items = []
        for start in sorted(starts):
            end = out.find(b"\0", start)
            items.append(out[start : end if end >= 0 else len(out)])
    else:
        items = out.split(b"\0")
    entries = []
    for item in items:
        if item:
            meta, _, path = item.partition(b"\t")
            mode, kind, obj = meta.decode().split()
            entries.append(TreeEntry(mode, kind, obj, path.decode("utf-8", "surrogateescape")))
    return entries


def read_blobs(git_dir: Path, shas: Sequence[str]) -> dict[str, bytes]:
    """The content of each blob in `shas` (those missing from the repository are left out)."""
    if not shas:
        return {}
    out = git(
        ["cat-file", "--batch"], git_dir=git_dir, input="".join(f"{s}\n" for s in shas).encode()
    )
    blobs: dict[str, bytes] = {}
    pos = 0
    for sha in shas:
        end = out.index(b"\n", pos)
        parts = out[pos:end].split()
        pos = end + 1
        if len(parts) < 3 or parts[1] != b"blob":
            if len(parts) >= 3:
                pos += int(parts[2]) + 1
            continue
        size = int(parts[2])
        blobs[sha] = out[pos : pos + size]
        pos += size + 1
    return blobs


def export_tree(git_dir: Path, sha: str, dest: Path) -> None:
    """Write the files of commit `sha` into `dest` (no .git; smudge filters never run)."""
    data = git(["archive", "--format=tar", sha], git_dir=git_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
