"""Who sandboxed code is on the host, and handing a run's writable paths to that identity.

Sandboxed code is never host root. When Forge runs as root (a development box) the tests
run as a dedicated unprivileged host user (`sandbox.user`, "forge-sandbox" by default);
when Forge runs as an ordinary user (`forge` under systemd) they run as that user, mapped
into a user namespace of their own, with no capabilities on the host.

`handed_over` gives the writable binds of one run to that identity for the run's length
and takes them back afterwards, with every setuid/setgid bit stripped, so nothing the
run made can elevate anyone once it is over.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from appliance.errors import SandboxError
from appliance.sandbox.usage import walk

# When `sandbox.user` does not exist: "nobody". By convention it owns no files and no
# login, so the sandboxed code can read or write nothing of the host beyond what is
# world-accessible, which it sees anyway through the read-only binds. The other processes
# that may run as nobody (some daemons) are out of reach: the sandbox has its own PID,
# network and IPC namespaces, and the worktree it writes to sits in a 0700 root-owned
# directory. A dedicated user (install.sh can create it) is still better: it owns nothing
# at all and shares its uid with no process.
FALLBACK_ID = 65534

S_BITS = stat.S_ISUID | stat.S_ISGID


def forge_is_root() -> bool:
    return os.geteuid() == 0


DEFAULT_USER = "forge-sandbox"


def sandbox_ids(settings=None) -> tuple[int, int]:
    """The host (uid, gid) that sandboxed code runs as; `settings`: SandboxSettings.

    Never (0, 0): as root, the configured unprivileged user (or nobody); otherwise
    Forge's own ids, which the user namespace maps inside.
    """
    if not forge_is_root():
        return os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam(settings.user if settings is not None else DEFAULT_USER)
    except KeyError:
        return FALLBACK_ID, FALLBACK_ID
    if entry.pw_uid == 0 or entry.pw_gid == 0:  # a misconfigured "user = root"
        return FALLBACK_ID, FALLBACK_ID
    return entry.pw_uid, entry.pw_gid


def _searchable(dir_fd: int, name: str) -> None:
    # Code that ran as Forge's own uid (the user-namespace path) may have left a directory
    # mode 000; give the owner back what it needs to walk and later delete it.
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(name, stat.S_IMODE(st.st_mode) | stat.S_IRWXU, dir_fd=dir_fd)


def _settle(paths: Iterable[Path], ids: tuple[int, int] | None) -> None:
    """Own everything under `paths` by `ids` (None: leave owners) and strip the s-bits.

    Runs only while no sandboxed process is alive, so a checked entry stays what it was.
    """
    for root in paths:
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            continue
        if ids is not None:
            os.lchown(root, *ids)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & S_BITS:
            os.chmod(root, stat.S_IMODE(st.st_mode) & ~S_BITS)
        if not stat.S_ISDIR(st.st_mode):
            continue
        for entry in walk(Path(root), before_descent=_searchable):
            with contextlib.suppress(FileNotFoundError):
                if ids is not None:
                    os.chown(entry.name, *ids, dir_fd=entry.dir_fd, follow_symlinks=False)
                if not stat.S_ISLNK(entry.st.st_mode) and entry.st.st_mode & S_BITS:
                    mode = stat.S_IMODE(entry.st.st_mode) & ~S_BITS
                    os.chmod(entry.name, mode, dir_fd=entry.dir_fd)


def strip_special_bits(paths: Iterable[Path]) -> None:
    """Clear setuid/setgid on everything under `paths` (symlinks have no mode to clear)."""
    _settle(paths, None)


# Folders whose contents are not one run's to own: everything under a writable bind is
# given away and taken back (owned by Forge) afterwards, so such a bind would steal them.
# Top-level folders (/tmp, /home, ...) and these (FORGE_HOME may be /var/lib/forge) too.
SHARED = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/dev", "/proc",
          "/sys", "/run")  # fmt: skip
SHARED_EXACTLY = ("/var/lib", "/var/log", "/var/cache", "/var/tmp", "/var/spool")


def _refuse_shared(path: Path) -> None:
    real = Path(os.path.realpath(path))
    top = len(real.parts) < 3 or str(real) in SHARED_EXACTLY
    if top or any(real.is_relative_to(folder) for folder in SHARED):
        raise SandboxError(
            f"refusing to make {real} writable in the sandbox: everything under a writable "
            "bind is handed to the sandbox user for the run and taken back afterwards",
            "bind a folder of its own (a worktree, a temporary folder), never a shared one",
        )


@contextlib.contextmanager
def handed_over(paths: Iterable[Path], uid: int, gid: int) -> Iterator[None]:
    """For the length of the block, the sandbox identity owns everything under `paths`.

    As root: lchown to uid:gid before, back to Forge's own ids after. Either way, after
    the block no file under `paths` keeps a setuid or setgid bit. Callers run this once
    the run's process tree is dead, so nothing changes the tree while it is walked.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        _refuse_shared(path)
    owner = (os.geteuid(), os.getegid())
    hand = forge_is_root() and (uid, gid) != owner
    try:
        if hand:
            _settle(paths, (uid, gid))
        yield
    finally:
        # chown by root clears the s-bits of regular files on Linux too; stripping them
        # explicitly covers directories (setgid) and the user-namespace path.
        _settle(paths, owner if hand else None)
