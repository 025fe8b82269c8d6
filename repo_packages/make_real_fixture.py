"""Make tests/data/real/tomli/: a small real public project kept in the tests, offline.

    python repo_packages/make_real_fixture.py [--source URL_OR_PATH] [--output DIR]

Run on a connected machine (or with --source pointing at a local clone or mirror). It
writes, into the output folder:

- `tomli.bundle`: the whole history of hukkin/tomli's `master` branch at HEAD below, as a
  git bundle with no prerequisites (`git clone tomli.bundle` works anywhere);
- `LICENSE`: the project's own license file at that commit (MIT);
- `fixture.json`: where it came from (url, branch, head) and the wheels it needs beyond
  pytest, pinned;
- `wheels/`: those wheels. tomli's suite is unittest, run by pytest, whose wheels the tests
  take from the demo's repo_packages/.demo-wheels (the same pins); it needs nothing else
  to run. Its build backend, flit-core, is here for a build that reads the project's
  `[build-system]` (every commit since 2021-12 asks for flit_core>=3.2,<4; HEAD >=3.12).

Nothing is rewritten: the bundle holds the upstream commits byte for byte, so the shas
in the tests are upstream's. Re-running with the same HEAD gives the same commits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUTPUT = ROOT / "tests" / "data" / "real" / "tomli"

URL = "https://github.com/hukkin/tomli.git"
BRANCH = "master"
HEAD = "920e20b1cf495b63f6d4a6aa3cd5e4ff25f5f5a7"  # 2026-01-12, after tomli 2.4.0
LICENSE = "MIT"
# Wheels beyond pytest's (the tests add the demo's pytest pins): the build backend only.
TEST_REQUIREMENTS: list[str] = []
BUILD_REQUIREMENTS = ["flit-core==3.12.0"]


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def make_fixture(source: str, output: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="real-fixture-") as tmp:
        mirror = Path(tmp) / "mirror.git"
        _git("clone", "--quiet", "--mirror", source, str(mirror))
        if _git("cat-file", "-t", HEAD, cwd=mirror) != "commit":
            raise SystemExit(f"{source} has no commit {HEAD}")
        # The branch at the pinned commit, and only it: the bundle is self-contained.
        _git("update-ref", f"refs/heads/{BRANCH}", HEAD, cwd=mirror)
        _git("symbolic-ref", "HEAD", f"refs/heads/{BRANCH}", cwd=mirror)
        staging = Path(tmp) / "out"
        staging.mkdir()
        _git(
            "-c", "pack.window=250", "-c", "pack.depth=250",
            "bundle", "create", "--quiet", str(staging / "tomli.bundle"), "HEAD", BRANCH,
            cwd=mirror,
        )  # fmt: skip
        _git("bundle", "verify", "--quiet", str(staging / "tomli.bundle"), cwd=mirror)
        (staging / "LICENSE").write_text(_git("show", f"{HEAD}:LICENSE", cwd=mirror) + "\n")
        wheels = staging / "wheels"
        wheels.mkdir()
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--dest", str(wheels),
             *TEST_REQUIREMENTS, *BUILD_REQUIREMENTS],
            check=True,
        )  # fmt: skip
        info = {
            "url": URL,
            "branch": BRANCH,
            "head": HEAD,
            "license": LICENSE,
            "commits": int(_git("rev-list", "--count", HEAD, cwd=mirror)),
            "test_requirements": TEST_REQUIREMENTS,
            "build_requirements": BUILD_REQUIREMENTS,
        }
        (staging / "fixture.json").write_text(json.dumps(info, indent=2) + "\n")
        if output.exists():
            shutil.rmtree(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, output)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=URL, help="URL or path of a tomli clone or mirror")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    info = make_fixture(args.source, args.output)
    size = sum(p.stat().st_size for p in args.output.rglob("*") if p.is_file())
    print(f"{args.output}: {info['commits']} commits at {HEAD[:12]}, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
