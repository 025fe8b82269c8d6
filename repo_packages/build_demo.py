"""Build the demo repo package, repo_packages/demo/, from scratch and deterministically.

    python repo_packages/build_demo.py [--output DIR] [--force]

1. gathers the wheels its tests and its build backend need (demo_source/requirements.txt,
   build-requirements.txt) into
   repo_packages/.demo-wheels/ — from wheels/ when Forge is installed offline;
2. writes the demo project's git history (demo_source/make_demo_repo.py) to a temp dir;
3. runs the real `forge package build` on it, with those wheels.

install.sh runs it; tests run it into temporary folders. Skips the work when the output
already holds a package built from the same inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "demo_source"
REQUIREMENTS = SOURCE / "requirements.txt"
BUILD_REQUIREMENTS = SOURCE / "build-requirements.txt"
WHEEL_CACHE = HERE / ".demo-wheels"
DEFAULT_OUTPUT = HERE / "demo"
STAMP = ".inputs-sha256"  # beside the package, not in it: the package itself stays pure


def pinned_requirements() -> list[str]:
    """The pins of the demo's test requirements and of its build backend."""
    lines = REQUIREMENTS.read_text().splitlines() + BUILD_REQUIREMENTS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def gather_wheels(dest: Path = WHEEL_CACHE) -> Path:
    """Download (or copy from wheels/) the demo's pinned wheels into `dest`."""
    from appliance.packages.build import download_wheels

    dest.mkdir(parents=True, exist_ok=True)
    offline = ROOT / "wheels"
    download_wheels(pinned_requirements(), dest, offline if any(offline.glob("*.whl")) else None)
    return dest


def make_source_repo(dest: Path) -> str:
    spec = importlib.util.spec_from_file_location("make_demo_repo", SOURCE / "make_demo_repo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_demo_repo(dest)


def inputs_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(SOURCE).as_posix().encode())
            digest.update(path.read_bytes())
    digest.update((HERE / "build_demo.py").read_bytes())
    return digest.hexdigest()


def build(
    output: Path = DEFAULT_OUTPUT, *, force: bool = False, wheels: Path | None = None
) -> Path:
    """Build the demo package into `output` (replacing an outdated one); return it."""
    stamp = output.parent / f".{output.name}{STAMP}"
    digest = inputs_digest()
    if (
        not force
        and (output / "manifest.json").is_file()
        and stamp.is_file()
        and stamp.read_text().strip() == digest
    ):
        return output
    wheel_dir = wheels or gather_wheels()
    with tempfile.TemporaryDirectory(prefix="forge-demo-") as tmp:
        head = make_source_repo(Path(tmp) / "demo")
        if output.exists():
            shutil.rmtree(output)
        forge = [sys.executable, "-m", "appliance"]
        subprocess.run(
            forge
            + [
                "package",
                "build",
                str(Path(tmp) / "demo"),
                "--output",
                str(output),
                "--name",
                "demo",
                "--version",
                "1.0.0",
                "--description",
                "A small unit-aware quantity library: Forge's demo repository",
                "--license",
                "MIT",
                "--test-command",
                "pytest -q",
                "--test-timeout",
                "300",
                "--find-links",
                str(wheel_dir),
                "--json",
                # The demo's history is made to exercise every mining filter, including
                # commits that change no test: keep the old selection.
                "--any-commit",
                *[arg for pin in pinned_requirements() for arg in ("--requirement", pin)],
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    manifest = json.loads((output / "manifest.json").read_text())
    if manifest["source"]["head"] != head:
        raise SystemExit(f"demo build: HEAD {head} missing from the package manifest")
    stamp.write_text(digest + "\n")
    return output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args()
    from appliance.errors import ForgeError

    try:
        path = build(args.output, force=args.force)
    except ForgeError as exc:
        print(f"demo build failed: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(
            f"demo build failed: {' '.join(exc.cmd[:6])} … exited {exc.returncode}", file=sys.stderr
        )
        return 1
    manifest = json.loads((path / "manifest.json").read_text())
    print(
        f"demo package: {path} ({len(manifest['commits'])} commits, "
        f"{len(manifest['wheels'])} wheels)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
