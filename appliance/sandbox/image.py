"""The docker sandbox's image, made offline from this machine's own files.

No registry is reachable from a Forge box, so the image is `docker import`ed from a tarball
of what a sandboxed run needs and nothing more: the interpreter Forge's environments are made
from (at its own path, since every environment's python links to it), without its
site-packages or its own test suite; a shell, git and a few core tools; the shared libraries
all of these load, found with ldd; and a minimal /etc. Everything is owned by root, with no
setuid bits and nothing writable but /tmp's mount point. A label records what the image was
built from and a digest of its contents, so building again when nothing changed does nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import SandboxError
from appliance.records import as_json
from appliance.sandbox.docker import LABEL_DIGEST, LABEL_FROM, connect_engine
from appliance.sandbox.interpreter import base_python

DEFAULT_TAG = "forge-sandbox:latest"
FORMAT = 1  # bump when what goes into the image changes in a way the file list does not show

# Programs a test suite commonly starts; each is taken with every library it loads.
TOOLS = (
    "sh", "bash", "env", "git", "setpriv", "cat", "ls", "cp", "mv", "rm", "mkdir", "rmdir",
    "ln", "touch", "chmod", "echo", "true", "false", "sleep", "id", "uname", "head", "tail",
    "grep", "sed", "find", "xargs", "sort", "wc", "dirname", "basename", "readlink",
    "realpath", "mktemp", "tr", "cut", "diff", "tee", "which",
)  # fmt: skip
# Libraries binary wheels expect from the system rather than bundling (manylinux policy).
WHEEL_LIBS = ("libstdc++.so.6", "libgcc_s.so.1", "libgomp.so.1", "libz.so.1")
# Directories taken whole: git's helper programs and the templates `git init` copies.
TREES = ("/usr/lib/git-core", "/usr/share/git-core")
# Parts of the interpreter's installation a test run never needs: its packages (environments
# do not see them), CPython's own tests, the GUI, and the static library for linking.
PREFIX_SKIP = ("site-packages", "test", "idlelib", "tkinter", "turtledemo", "config-")
ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
EMPTY_DIRS = ("tmp", "proc", "dev", "sys", "etc", "usr/local/bin")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class ImagePlan:
    """What the image will hold: host paths by their path in the image, and its digest."""

    files: tuple[Path, ...]  # host paths, copied to the same path (links kept as links)
    digest: str
    built_from: dict[str, str]

    @property
    def size(self) -> int:
        return sum(p.lstat().st_size for p in self.files if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    digest: str
    built: bool  # False: an image with the same contents was already there
    size_bytes: int
    built_from: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return as_json(self, forge_toml=forge_toml(self.tag))


def forge_toml(tag: str) -> str:
    """The lines that make Forge use this image."""
    return f'[sandbox]\nbackend = "docker"\ndocker_image = {json.dumps(tag)}\n'


def _canonical(path: Path) -> Path:
    # The file's own name kept (it may be a link), its directory resolved: /lib/x -> /usr/lib/x.
    return Path(os.path.realpath(path.parent)) / path.name


def _add_with_links(path: Path, found: dict[Path, None]) -> None:
    """Add `path` and, when it is a symlink, what it points to, link by link."""
    for _ in range(40):  # a loop of links ends here rather than hanging the build
        path = _canonical(path)
        if path in found or not os.path.lexists(path):
            return
        found[path] = None
        if not path.is_symlink():
            return
        path = path.parent / os.readlink(path)


def _libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library the dynamic loader finds for `binaries` (ldd, run on the host's
    own system binaries and the interpreter's extension modules: nothing a package brought)."""
    libs: set[Path] = set()
    for chunk in range(0, len(binaries), 64):
        proc = subprocess.run(
            ["ldd", *map(str, binaries[chunk : chunk + 64])],
            capture_output=True,
            text=True,
            check=False,  # ldd exits 1 when one of them is not dynamic; the rest still count
        )
        for line in proc.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1:
                target = parts[parts.index("=>") + 1]
                if target.startswith("/"):
                    libs.add(Path(target))
            elif parts and parts[0].startswith("/") and not line.endswith(":"):
                libs.add(Path(parts[0]))  # the loader itself, /lib64/ld-linux-x86-64.so.2
    return libs


def _walk(top: Path, skip: Callable[[Path], bool] = lambda _p: False) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not skip(here / d))
        yield here
        for name in sorted(filenames):
            yield here / name
        for name in dirnames:  # links to directories: os.walk lists them but does not follow
            if (here / name).is_symlink():
                yield here / name


def interpreter_prefix(python: str) -> Path:
    proc = subprocess.run(
        [python, "-I", "-c", "import sys; print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(os.path.realpath(proc.stdout.strip()))


def plan_image() -> ImagePlan:
    """Gather the host files the image is made of; nothing is written."""
    python = base_python()
    prefix = interpreter_prefix(python)
    stdlib = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"

    def skip(path: Path) -> bool:
        return path.parent == stdlib and path.name.startswith(PREFIX_SKIP)

    found: dict[Path, None] = {}
    for path in _walk(prefix, skip):
        _add_with_links(path, found)
    for tree in TREES:
        if Path(tree).is_dir():
            for path in _walk(Path(tree)):
                _add_with_links(path, found)
    tools = [Path(p) for name in TOOLS if (p := shutil.which(name, path="/usr/bin:/bin"))]
    for tool in tools:
        _add_with_links(tool, found)
    elves = [p for p in found if p.is_file() and not p.is_symlink() and _is_elf(p)]
    libs = _libraries(sorted(elves))
    # The wheel libraries are looked for where the system's libc is.
    libc_dirs = {lib.parent for lib in _libraries([Path(python)]) if lib.name.startswith("libc.")}
    for name in WHEEL_LIBS:
        libs.update(d / name for d in libc_dirs if (d / name).exists())
    # What the wheel libraries themselves load (libstdc++ needs libm and libgcc_s).
    libs.update(_libraries(sorted(lib for lib in libs if lib.exists())))
    for lib in sorted(libs):
        _add_with_links(lib, found)
    for name in ("ld.so.cache", "nsswitch.conf"):
        if Path("/etc", name).exists():
            _add_with_links(Path("/etc", name), found)
    files = tuple(sorted(found))
    built_from = {
        "python": python,
        "python_version": platform.python_version(),
        "prefix": str(prefix),
        "system": _os_name(),
        "machine": platform.machine(),
    }
    return ImagePlan(files, _digest(files, built_from), built_from)


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _digest(files: tuple[Path, ...], built_from: dict[str, str]) -> str:
    """Names, kinds, sizes, modes and times of every file: a change to any changes it."""
    h = hashlib.sha256(f"forge-sandbox-image {FORMAT}\n".encode())
    h.update(json.dumps(built_from, sort_keys=True).encode())
    for path in files:
        st = path.lstat()
        link = os.readlink(path) if path.is_symlink() else ""
        h.update(f"{path}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\n".encode())
    return h.hexdigest()


def _root_owned(info: tarfile.TarInfo, mode: int | None = None) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if mode is not None:
        info.mode = mode
    elif info.isdir():
        info.mode = 0o755
    else:
        # No setuid/setgid in the image, and nothing writable but by root.
        info.mode = info.mode & 0o755
    return info


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return _root_owned(info, 0o1777 if name == "tmp" else 0o755)


def write_tarball(
    plan: ImagePlan, out: Path, progress: Callable[[int, int], None] | None = None
) -> int:
    """Write the image's root file system to `out`; returns its size in bytes."""
    total = plan.size
    done = 0
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()

        def parents(arcname: str) -> None:
            parts = arcname.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                name = "/".join(parts[:i])
                if name not in dirs:
                    dirs.add(name)
                    # A parent of the interpreter (such as /root) must be passable by the
                    # sandbox's uid, whatever its mode on the host.
                    tar.addfile(_dir(name))

        for name in EMPTY_DIRS:
            parents(name + "/x")
        for name in ROOT_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(host)
                tar.addfile(_root_owned(info, 0o777))
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            data = text.encode()
            info = _root_owned(tarfile.TarInfo(name), 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path in plan.files:
            arcname = str(path).lstrip("/")
            if arcname in dirs:
                continue
            parents(arcname)
            info = tar.gettarinfo(str(path), arcname)
            if info.isdir():
                dirs.add(arcname)
                tar.addfile(_root_owned(info))
            elif info.isreg():
                with path.open("rb") as fh:
                    tar.addfile(_root_owned(info), fh)
                done += info.size
                if progress is not None:
                    progress(done, total)
            elif info.issym() or info.islnk():
                tar.addfile(_root_owned(info))
            # Sockets, fifos and devices never belong in the image.
    return out.stat().st_size


def _labels(plan: ImagePlan) -> list[str]:
    return [
        f"LABEL {LABEL_DIGEST}={json.dumps(plan.digest)}",
        f"LABEL {LABEL_FROM}={json.dumps(json.dumps(plan.built_from, sort_keys=True))}",
        'CMD ["/bin/sh"]',
    ]


def _engine(client_factory: Callable[[], Any] | None) -> Any:
    return connect_engine(client_factory)


def existing_digest(client: Any, tag: str) -> tuple[str, str] | None:
    """(image id, contents digest) of the image tagged `tag`, None when there is none."""
    # the docker SDK: loaded only when the docker backend is used
    import docker.errors

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    return image.id, (image.labels or {}).get(LABEL_DIGEST, "")


def build_image(
    tag: str = DEFAULT_TAG,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    client_factory: Callable[[], Any] | None = None,
) -> BuiltImage:
    """Make the sandbox image `tag` from this machine's files, unless an image with the same
    contents already carries that tag. `progress(step, done, total)` hears of the long parts."""
    # the docker SDK: loaded only when the docker backend is used
    import docker.errors
    import requests.exceptions

    client = _engine(client_factory)
    plan = plan_image()
    size = plan.size
    present = existing_digest(client, tag)
    if present is not None and present[1] == plan.digest:
        return BuiltImage(tag, present[0], plan.digest, False, size, plan.built_from)
    with tempfile.TemporaryDirectory(prefix="forge-sandbox-image-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        try:
            write_tarball(
                plan,
                tarball,
                (lambda done, total: progress("writing the root file system", done, total))
                if progress
                else None,
            )
        except OSError as exc:  # no space in TMPDIR, or a file changed while it was read
            raise SandboxError(
                f"could not write the sandbox image's files to {tmp}: {exc}",
                "make room in the temporary directory (TMPDIR) and build again",
            ) from exc
        if progress:
            progress("importing into docker", 0, 0)
        repository, colon, version = tag.rpartition(":")
        if not colon or "/" in version:  # no tag, or the colon of a registry's port
            repository, version = tag, "latest"
        try:
            client.api.import_image(
                src=str(tarball), repository=repository, tag=version, changes=_labels(plan)
            )
            image = client.images.get(tag)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise SandboxError(
                f"docker could not import the sandbox image {tag!r}: {exc}",
                "check `docker info` and the engine's free disk space, then build again",
            ) from exc
    return BuiltImage(tag, image.id, plan.digest, True, size, plan.built_from)
