"""Real repositories through the whole operator flow: the numbers behind docs/real-repos.md.

    python bench/real_repos.py [--repo NAME[=SOURCE] ...] [--mirrors DIR] [--out DIR]
                               [--jobs N] [--find-links DIR | --index-url URL]
                               [-- BUILD_ARGS...]

For each repository, from a fresh FORGE_HOME: `forge package build SOURCE -o DIR --json`,
`forge ingest --keep DIR --json`, `forge harness check NAME --json`. It prints, per
repository: commits read, kept (and what each filter removed), graded, usable tasks,
infrastructure failures (share of kept), and every non-usable reason with its count;
`OUT/report.json` holds the same. SOURCE is a URL, a work tree or a bare repository
(run it on a connected machine for URLs and the index); `--repo NAME` alone picks one of
the listed projects. `--mirrors DIR` takes each listed project from a local copy,
DIR/OWNER+NAME/repo (a bare repository, e.g. `git clone --mirror URL DIR/OWNER+NAME/repo`),
instead of its URL. Arguments after `--` go to every `forge package build`, after each
project's own (its license and the window of history graded, see REPOS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORGE = Path(sys.executable).parent / "forge"

# name → (source, build arguments of its own). Requirement sets are resolved as of each
# commit's date, so old history runs with the tools of its day; --max-commits bounds the
# two longest histories to what grades in minutes.
REPOS: dict[str, tuple[str, list[str]]] = {
    "tomli": ("https://github.com/hukkin/tomli.git", ["--license", "MIT"]),
    # six's newest commit is from 2020: the pytest of that date (4.6) does not import on
    # Python 3.11, so six takes today's index, and with it only its last commits run.
    "six": (
        "https://github.com/benjaminp/six.git",
        ["--license", "MIT", "--latest", "--since", "2019-12-01"],
    ),
    # Before 2024 pluggy declared its runtime dependencies (importlib_metadata) only in
    # setup.py, which Forge does not run to read: those commits' tests cannot import.
    "pluggy": (
        "https://github.com/pytest-dev/pluggy.git",
        ["--license", "MIT", "--since", "2024-04-19"],
    ),
    "stamina": ("https://github.com/hynek/stamina.git", ["--license", "MIT"]),
    "marko": ("https://github.com/frostming/marko.git", ["--license", "MIT"]),
    # Its toml-test cases are a git submodule, which a package does not carry: the module
    # that reads them does not import, and grading leaves it out.
    "tomlkit": (
        "https://github.com/python-poetry/tomlkit.git",
        ["--license", "MIT", "--max-commits", "30"],
    ),
}


def mirror_source(url: str, mirrors: Path) -> str:
    """The local copy of a GitHub URL under `mirrors` (OWNER+NAME/repo), as a file:// URL:
    forge clones it like any URL, so a bare copy without `core.bare` set reads too."""
    owner, name = url.removesuffix(".git").rstrip("/").split("/")[-2:]
    path = (mirrors / f"{owner}+{name}" / "repo").resolve()
    if not path.is_dir():
        raise SystemExit(f"no mirror of {url} at {path}")
    return path.as_uri()


def _forge(args: list[str], home: Path, log: Path) -> tuple[int, object, float]:
    """Run `forge ARGS --json` with FORGE_HOME=home: (exit code, parsed stdout, seconds)."""
    env = {k: v for k, v in os.environ.items() if k != "FORGE_CONFIG"} | {"FORGE_HOME": str(home)}
    started = time.monotonic()
    proc = subprocess.run([str(FORGE), *args, "--json"], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    log.write_text(f"$ forge {' '.join(args)} --json\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    try:
        return proc.returncode, json.loads(proc.stdout), seconds
    except json.JSONDecodeError:
        return proc.returncode, None, seconds


def reason_kind(row: dict) -> str:
    """A non-usable reason without its details (which tests, which modules)."""
    reason = row["reason"]
    head = re.split(r":", reason, maxsplit=1)[0].strip()
    return f"{row['status']}: {head}"


def run_one(name: str, source: str, build_args: list[str], out: Path, jobs: int) -> dict:
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    home = folder / "home"
    home.mkdir(parents=True)
    (home / "forge.toml").write_text("[ingest]\nquiet_seconds = 0\n")
    result: dict = {"name": name, "source": source}
    rc, built, seconds = _forge(
        ["package", "build", source, "-o", str(folder / "pkg"), "--name", name, *build_args],
        home,
        folder / "build.log",
    )
    result["build_s"] = round(seconds, 1)
    if rc != 0 or not isinstance(built, dict):
        result["failed"] = f"build exited {rc}: see {folder / 'build.log'}"
        return result
    result |= {
        "read": built["scanned"],
        "kept": built["kept"],
        "removed": {k: v for k, v in built["removed"].items() if v},
    }
    rc, ingested, seconds = _forge(
        ["ingest", "--keep", str(folder / "pkg")], home, folder / "ingest.log"
    )
    result["ingest_s"] = round(seconds, 1)
    outcome = ingested["results"][0] if isinstance(ingested, dict) else {}
    if outcome.get("outcome") != "accepted":
        result["failed"] = f"ingest: {outcome.get('outcome')}: {outcome.get('reasons')}"
        return result
    rc, rows, seconds = _forge(
        ["harness", "check", name, "--jobs", str(jobs)], home, folder / "check.log"
    )
    result["check_s"] = round(seconds, 1)
    if not isinstance(rows, list):
        result["failed"] = f"harness check exited {rc}: see {folder / 'check.log'}"
        return result
    infra = sum(1 for r in rows if r["status"] == "infra")
    result |= {
        "graded": len(rows),
        "usable": sum(1 for r in rows if r["usable"]),
        "infra": infra,
        "infra_share": round(infra / len(rows), 3) if rows else 0.0,
        "fail_to_pass": sum(r["fail_to_pass"] for r in rows),
        "not_usable": dict(Counter(reason_kind(r) for r in rows if not r["usable"]).most_common()),
        "usable_commits": [f"{r['sha'][:12]} {r['subject']}" for r in rows if r["usable"]],
    }
    return result


def main() -> None:
    argv = sys.argv[1:]
    build_extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", default=[], help="NAME[=SOURCE] (repeatable)")
    parser.add_argument("--mirrors", type=Path, help="local copies: DIR/OWNER+NAME/repo")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "real-repos")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--find-links", type=Path)
    parser.add_argument("--index-url")
    args = parser.parse_args(argv)
    chosen = dict(REPOS) if not args.repo else {}
    for item in args.repo:  # a known name keeps its own build arguments
        name, _, source = item.partition("=")
        if not source and name not in REPOS:
            raise SystemExit(f"{name} is not listed: give NAME=SOURCE ({', '.join(REPOS)})")
        chosen[name] = (source or REPOS[name][0], REPOS.get(name, ("", []))[1])
    for name, (src, own) in chosen.items():  # listed URLs only; a given SOURCE stays
        if args.mirrors and src == REPOS.get(name, ("",))[0]:
            chosen[name] = (mirror_source(src, args.mirrors), own)
    common = list(build_extra)
    if args.find_links:
        common += ["--find-links", str(args.find_links.resolve())]
    if args.index_url:
        common += ["--index-url", args.index_url]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, (source, own) in chosen.items():
        result = run_one(name, source, [*own, *common], args.out.resolve(), args.jobs)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    (args.out / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| repository | read | kept | graded | usable | infra |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        if "failed" in r:
            print(f"| {r['name']} | failed: {r['failed']} |||||")
            continue
        print(
            f"| {r['name']} | {r['read']} | {r['kept']} | {r['graded']} | {r['usable']} | "
            f"{r['infra']} ({r['infra_share']:.0%}) |"
        )


if __name__ == "__main__":
    main()
