"""Build and install the project in the sandbox, as its developers would (`pip install -e .`).

Run inside the sandbox by the overlay environment's python (appliance/harness/install.py
makes it), with the worktree as cwd and no network:

    python build_project.py SITE BIN OUT

It calls the project's own PEP 517 build backend in this process (the backend and its
plugins come from the shared environment, which the overlay sees; nothing is fetched),
building an editable wheel where the backend can (PEP 660) and a regular one otherwise,
and installs that wheel into SITE (scripts into BIN). Then it writes OUT/generated.json:
the files the build created or changed in the worktree (a version file written by
hatch-vcs or setuptools-scm, egg-info), so the install can be reused for another
worktree of the same project.

Only the standard library is imported here: this file is Forge's, but the interpreter
running it is the package's environment. Exit status: 0 built and installed; 3 the build
or the install failed (the reason is the last lines of the output).
"""

from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import json
import os
import re
import sys
import tempfile
import tomllib
import traceback
import zipfile
from pathlib import Path

LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
SKIP_DIRS = {".git", "__pycache__", "build", "dist", ".eggs", ".tox", ".nox", ".venv"}
MAX_GENERATED = 2000  # files reported; the host bounds their bytes too
SCRIPT = """#!{python}
import sys
from {module} import {head}
if __name__ == "__main__":
    sys.argv[0] = sys.argv[0].removesuffix(".exe")
    sys.exit({call}())
"""


def backend_of(root: Path) -> tuple[str, list[str]]:
    """The build backend named by pyproject.toml (setuptools' legacy one without it) and
    the in-tree folders it may be imported from (backend-path)."""

    system = {}
    if (root / "pyproject.toml").is_file():
        with open(root / "pyproject.toml", "rb") as fh:
            system = tomllib.load(fh).get("build-system", {})
    backend = system.get("build-backend") or LEGACY_BACKEND
    paths = [str((root / p).resolve()) for p in system.get("backend-path", [])]
    for path in paths:
        if not Path(path).is_relative_to(root.resolve()):
            raise SystemExit(f"backend-path {path} leads out of the project")
    return backend, paths


def load_backend(name: str, paths: list[str]) -> object:
    sys.path[:0] = paths
    module, _, attrs = name.partition(":")
    backend = importlib.import_module(module)
    for attr in filter(None, attrs.split(".")):
        backend = getattr(backend, attr)
    return backend


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file of the tree, the folders builds write to left out."""
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in names:
            path = Path(folder) / name
            st = path.lstat()
            files[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return files


def build(backend: object, dist: Path) -> tuple[Path, bool]:
    """The wheel the backend builds into `dist`, and whether it is an editable one.

    Editable where the backend has the hook and what it asks for to use it is installed
    (hatchling wants `editables` in some modes, which a package need not ship); a regular
    wheel otherwise, or when the editable build fails: the tree's code stays first on the
    path either way (PYTHONPATH), and the wheel gives the metadata, entry points and
    generated files."""
    if hasattr(backend, "build_editable") and not missing_requires(backend, editable=True):
        try:
            return dist / backend.build_editable(str(dist)), True
        except Exception:  # the backend's own errors: said, then the regular wheel is tried
            traceback.print_exc()
            print("forge: the editable build failed; building a regular wheel", flush=True)
    return dist / backend.build_wheel(str(dist)), False


def _safe(name: str) -> str:
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts or not parts:
        raise SystemExit(f"the wheel holds a path outside its install: {name!r}")
    return name


def install(wheel: Path, site: Path, bin_dir: Path) -> str:
    """Unpack `wheel` into `site` the way an installer does (PEP 427): `.data/purelib`
    and `platlib` into site-packages, `scripts` into BIN, console scripts written for its
    entry points. Returns the distribution's dist-info folder name."""
    with zipfile.ZipFile(wheel) as zf:
        names = [_safe(n) for n in zf.namelist()]
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        data = dist_info.removesuffix(".dist-info") + ".data"
        for name in names:
            if name.endswith("/"):
                continue
            head, _, rest = name.partition("/")
            if head == data:
                kind, _, rest = rest.partition("/")
                if kind in ("purelib", "platlib"):
                    dest = site / rest
                elif kind == "scripts":
                    dest = bin_dir / rest
                else:
                    continue  # headers and data files: nothing a test imports
            else:
                dest = site / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            content = zf.read(name)
            if dest.parent == bin_dir and content.startswith(b"#!python"):
                content = f"#!{sys.executable}".encode() + content[len(b"#!python") :]
            dest.write_bytes(content)
            if dest.parent == bin_dir:
                dest.chmod(0o755)
    (site / dist_info / "INSTALLER").write_text("forge\n")
    scripts(site / dist_info / "entry_points.txt", bin_dir)
    return dist_info


def scripts(entry_points: Path, bin_dir: Path) -> None:
    if not entry_points.is_file():
        return
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(entry_points)
    for section in ("console_scripts", "gui_scripts"):
        if not parser.has_section(section):
            continue
        for script, target in parser.items(section):
            module, _, attrs = target.partition(":")
            attrs = attrs.split("[")[0].strip()
            head = attrs.split(".")[0]
            path = bin_dir / Path(script).name
            path.write_text(
                SCRIPT.format(python=sys.executable, module=module.strip(), head=head, call=attrs)
            )
            path.chmod(0o755)


def missing_requires(backend: object, *, editable: bool) -> list[str]:
    """What the backend says it needs to build an editable or a regular wheel (PEP 517's
    get_requires hooks) that is not installed."""

    kind = "editable" if editable else "wheel"
    hook = getattr(backend, f"get_requires_for_build_{kind}", None)
    try:
        wanted = list(hook()) if hook else []
    except BaseException:  # noqa: BLE001 - a diagnostic only; the build already failed
        return []
    missing = []
    for requirement in wanted:
        name = re.split(r"[\s\[<>=!~;@(]", str(requirement).strip(), maxsplit=1)[0]
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(str(requirement))
    return missing


def main(argv: list[str]) -> int:
    site, bin_dir, out = (Path(a) for a in argv[1:4])
    root = Path.cwd()
    try:
        backend_name, paths = backend_of(root)
        print(f"forge: building the project with {backend_name}", flush=True)
        before = snapshot(root)
        backend = load_backend(backend_name, paths)
        with tempfile.TemporaryDirectory(prefix="forge-dist-") as tmp:
            wheel, editable = build(backend, Path(tmp))
            dist_info = install(wheel, site, bin_dir)
        after = snapshot(root)
    except BaseException:  # the backend's own exceptions, SystemExit from a setup.py too
        traceback.print_exc()
        missing = missing_requires(backend, editable=False) if "backend" in locals() else []
        if missing:
            print(f"forge: the backend asks for {', '.join(missing)}, not in the package")
        print("forge: the project's build failed", flush=True)
        return 3
    generated = sorted(p for p, st in after.items() if before.get(p) != st)
    (out / "generated.json").write_text(
        json.dumps(
            {
                "backend": backend_name,
                "editable": editable,
                "dist_info": dist_info,
                "generated": generated[:MAX_GENERATED],
            }
        )
    )
    print(f"forge: installed {dist_info} ({'editable' if editable else 'wheel'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
