"""Walking a tree that sandboxed code wrote, safely: disk usage, and the walker itself.

The tree is hostile: symlinks anywhere, directories nested deeper than PATH_MAX allows
a path to name, entries renamed while we look. `walk` therefore never builds long paths
and never follows a symlink: it holds one directory descriptor at a time, opens children
relative to it with O_NOFOLLOW, climbs back with "..", and checks each climb lands on the
directory it came from (else TreeChanged), so a rename can never walk it out of the tree.
Iterative, so depth costs neither recursion nor descriptors.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import SandboxError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeChanged(SandboxError):
    """A directory moved while it was walked; the walk stopped where it was. disk_bytes
    counts what it walked; a walk that hands a run's files over reaches the operator."""

    def __init__(self, root: str) -> None:
        super().__init__(
            f"a directory under {root} moved while Forge walked it",
            "nothing of the run may still be running when its files are walked; run it again",
        )


@dataclass(frozen=True)
class Entry:
    """One thing in the tree: `name` relative to the open directory `dir_fd`."""

    dir_fd: int
    name: str
    st: os.stat_result


def _listing(fd: int) -> list[tuple[str, os.stat_result]]:
    out = []
    with os.scandir(fd) as it:
        for entry in it:
            try:
                out.append((entry.name, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:  # gone between the listing and the lstat
                continue
    return out


def walk(root: Path, *, before_descent=None) -> Iterator[Entry]:
    """Every entry under the directory `root` (not `root` itself), parents first.

    `before_descent(dir_fd, name)` runs before a child directory is opened (to make it
    searchable, say). The descriptor in an Entry is valid only until the next one.
    """
    try:
        fd = os.open(root, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError, PermissionError, OSError):
        return
    here = os.fstat(fd)
    # The path back up: for each open level, its (dev, ino) and the subdirectories left.
    stack: list[tuple[tuple[int, int], list[str]]] = []
    try:
        while True:
            subdirs = []
            try:
                listing = _listing(fd)
            except PermissionError:
                listing = []
            for name, st in listing:
                yield Entry(fd, name, st)
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(name)
            stack.append(((here.st_dev, here.st_ino), subdirs))
            # Next: the first remaining subdirectory, climbing up as levels run out.
            while True:
                ident, todo = stack[-1]
                if todo:
                    name = todo.pop()
                    if before_descent is not None:
                        before_descent(fd, name)
                    try:
                        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except (FileNotFoundError, NotADirectoryError, PermissionError, OSError):
                        continue  # gone, replaced by a symlink, or unreadable
                    os.close(fd)
                    fd, here = child, os.fstat(child)
                    break
                stack.pop()
                if not stack:
                    return
                parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd, here = parent, os.fstat(parent)
                if (here.st_dev, here.st_ino) != stack[-1][0]:
                    raise TreeChanged(str(root))
    finally:
        os.close(fd)


def disk_bytes(paths: Iterable[Path]) -> int:
    """Bytes allocated under `paths` (st_blocks * 512), each inode counted once.

    Symlinks are counted, never followed. A tree that changes under the walk is counted
    as far as the walk got: a lower bound, and the next poll sees the rest.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in paths:
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_blocks * 512
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            for entry in walk(Path(root)):
                key = (entry.st.st_dev, entry.st.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += entry.st.st_blocks * 512
        except TreeChanged:
            continue
    return total
