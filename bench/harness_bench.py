"""Benchmark: what the harness costs (environments, sandbox, gold grading) vs. doing it by hand.

    .venv/bin/python bench/harness_bench.py [--repeat N] [--commits K] [--json]
        [--env-repeat M] [--check]

Three parts, each against a baseline measured in the same run, so the ratios hold on a
noisy machine where absolute times drift:

1. Environment for a commit: `ensure_env` cold (empty uv cache, then warm uv cache) and
   warm, vs. `python -m venv` + `pip install --no-index` of the same pinned wheels. Also
   the disk a second environment of the same requirements adds (hardlinked files counted
   once) next to the size of the pip-built one.
2. Sandbox overhead: the demo's largest suite through `run_tests` (bubblewrap, limits,
   supervisor, report parsing) vs. the same pytest command line run directly with the same
   environment variables and the same report parsing, alternated, medians compared.
3. Project install: the project built by its own backend in the sandbox and installed
   into an overlay (harness/install.py) — cold (built) and warm (reused for a new worktree
   of the same build inputs) — against the test run it precedes (run_tests, warm).
4. Gold grading throughput: `grade_gold` over the first K demo commits that change a test
   file, environment warm; commits per minute, where the time goes, and the ratio to the
   ideal — the same number of direct pytest runs on the same trees.

Needs ./install.sh (bubblewrap, and repo_packages/demo/). Works in a temporary FORGE_HOME.
Exit 0 whatever the results, unless --check is given: then 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from _report import positive as _positive
from _report import progress as _progress
from _report import ratio as _ratio
from _report import seconds as _seconds

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "repo_packages" / "demo"

WARM_ENV_GOAL_S = 0.3
WARM_ENV_SPEEDUP_GOAL = 10.0
EXTRA_DISK_GOAL_MB = 20.0
SANDBOX_RATIO_GOAL = 1.15
INSTALL_RATIO_GOAL = 0.5  # the per-commit project install, warm, against the test run
PYTEST_TIME = re.compile(r" in (\d+(?:\.\d+)?)s\b")


@dataclass
class Row:
    section: str
    name: str
    value: float  # seconds, or MB / commits per minute as `unit` says
    unit: str = "s"
    ratio: float | None = None  # value / the section's baseline
    goal: str = ""
    ok: bool | None = None  # None: informative, no goal


def _value(row: Row) -> str:
    if row.unit == "s":
        return _seconds(row.value)
    return f"{row.value:.1f} {row.unit}"


def _commits(n: int) -> str:
    return f"{n} commit" if n == 1 else f"{n} commits"


# ---------------------------------------------------------------------------- setup


def _forge_home(tmp: Path):
    """A FORGE_HOME in `tmp` with the demo package ingested: (config, db, specs)."""
    home = tmp / "home"
    home.mkdir()
    (home / "forge.toml").write_text("[ingest]\nquiet_seconds = 0\n")
    os.environ["FORGE_HOME"] = str(home)
    os.environ.pop("FORGE_CONFIG", None)
    from appliance.config import load_config
    from appliance.harness.spec import commit_specs
    from appliance.packages.ingest import ingest
    from appliance.packages.split import no_rows
    from appliance.store import open_db

    config = load_config()
    config.ensure_dirs()
    db = open_db(config)
    results = ingest(config, db, DEMO, keep=True, trained_rows=no_rows)
    if not results or results[-1].outcome != "accepted":
        raise SystemExit(f"ingesting the demo failed: {[r.to_dict() for r in results]}")
    return config, db, commit_specs(config, db, "demo")


def _disk(roots: Iterable[Path]) -> int:
    """Bytes allocated under `roots`, each inode (hardlinks) counted once."""
    seen: dict[tuple[int, int], int] = {}
    for root in roots:
        st = os.lstat(root)
        seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                st = os.lstat(os.path.join(folder, name))
                seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def _direct_env(env_path: Path, repo: Path) -> dict[str, str]:
    """What run_tests gives the sandboxed run: the backend's base variables plus its own."""
    paths = [str(repo / "src")] if (repo / "src").is_dir() else []
    return {
        "PATH": f"{env_path / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "VIRTUAL_ENV": str(env_path),
        "PYTHONPATH": ":".join([*paths, str(repo)]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def _run_direct(spec, work: Path, env_path: Path) -> tuple[float, int, float | None]:
    """The run_tests command line without the sandbox, report parsed the same way:
    (seconds, number of test outcomes, pytest's own reported seconds)."""
    from appliance.harness.junit import read_report
    from appliance.harness.testrun import pytest_argv

    repo = work / "repo"
    report = work / "out" / "direct.xml"
    report.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(
        pytest_argv(spec, report),
        cwd=repo,
        env=_direct_env(env_path, repo),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=spec.test_timeout_s,
    )
    parsed = read_report(report)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1, 2):
        raise SystemExit(f"direct pytest exited {proc.returncode}:\n{proc.stdout[-2000:]}")
    return seconds, len(parsed.outcomes), _pytest_time(proc.stdout)


def _pytest_time(output: str) -> float | None:
    lines = output.strip().splitlines()
    match = PYTEST_TIME.search(lines[-1]) if lines else None
    return float(match.group(1)) if match else None


# ------------------------------------------------------------- 1. environments


def bench_envs(config, spec, tmp: Path, env_repeat: int, repeat: int) -> tuple[list[Row], dict]:
    from appliance.harness.envs import ensure_env
    from appliance.packages.environment import base_python, compile_bytecode, create_env

    section = "Environment for a commit"
    envs = config.dir("envs")
    requirements = tmp / "requirements.txt"
    requirements.write_text("\n".join(spec.requirements) + "\n")
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    pip_env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

    _progress(f"environments: pip baseline ×{env_repeat}")
    pip_times = []
    pip_dir = tmp / "pip-env"
    for _ in range(env_repeat):
        shutil.rmtree(pip_dir, ignore_errors=True)
        start = time.perf_counter()
        for argv in (
            [base_python(), "-m", "venv", str(pip_dir)],
            [str(pip_dir / "bin" / "pip"), "install", "-q", "--no-index"]
            + ["--find-links", str(spec.wheels), "-r", str(requirements)],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, env=pip_env)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}{proc.stdout}")
        pip_times.append(time.perf_counter() - start)
    pip_disk = _disk([pip_dir])

    def cold(remove: Path) -> float:
        shutil.rmtree(remove, ignore_errors=True)
        start = time.perf_counter()
        env = ensure_env(config, spec)
        seconds = time.perf_counter() - start
        assert env.built, "ensure_env reused an environment that was removed"
        return seconds

    _progress(f"environments: ensure_env cold ×{env_repeat} (empty, then warm uv cache)")
    cold_empty = [cold(envs) for _ in range(env_repeat)]
    cold_warm = [cold(envs / spec.env_key) for _ in range(env_repeat)]
    warm = []
    for _ in range(max(repeat, 10)):
        start = time.perf_counter()
        env = ensure_env(config, spec)
        warm.append(time.perf_counter() - start)
        assert not env.built

    # A second environment of the same requirements beside the first, as another key
    # would get: its installed files are hardlinks into the same uv cache.
    second = envs / ".bench-second-env"
    shutil.rmtree(second, ignore_errors=True)
    create_env(
        second,
        spec.requirements,
        spec.wheels,
        cache_dir=envs / ".uv-cache",
    )
    compile_bytecode(second, config, timeout=600)  # as ensure_env builds them (in the sandbox)
    first_disk = _disk([env.path])
    extra = _disk([env.path, second]) - first_disk
    files = [Path(d) / f for d, _, fs in os.walk(second) for f in fs]
    linked = sum(1 for f in files if os.lstat(f).st_nlink > 1)
    same_fs = os.stat(second).st_dev == os.stat(envs / ".uv-cache").st_dev

    base = statistics.median(pip_times)
    warm_s = statistics.median(warm)
    rows = [
        Row(section, "python -m venv + pip install (baseline)", base, ratio=1.0),
        Row(
            section,
            "ensure_env, cold, empty uv cache",
            statistics.median(cold_empty),
            ratio=statistics.median(cold_empty) / base,
        ),
        Row(
            section,
            "ensure_env, cold, warm uv cache",
            statistics.median(cold_warm),
            ratio=statistics.median(cold_warm) / base,
        ),
        Row(
            section,
            "ensure_env, warm (exists)",
            warm_s,
            ratio=warm_s / base,
            goal=f"≤ {WARM_ENV_GOAL_S} s, ≥ {WARM_ENV_SPEEDUP_GOAL:g}× faster",
            ok=warm_s <= WARM_ENV_GOAL_S and base / warm_s >= WARM_ENV_SPEEDUP_GOAL,
        ),
        Row(section, "disk: pip-built env (baseline)", pip_disk / 1e6, "MB", ratio=1.0),
        Row(section, "disk: first uv env", first_disk / 1e6, "MB", ratio=first_disk / pip_disk),
        Row(
            section,
            "disk: extra per additional uv env",
            extra / 1e6,
            "MB",
            ratio=extra / pip_disk,
            goal=f"≤ {EXTRA_DISK_GOAL_MB:g} MB",
            ok=extra / 1e6 <= EXTRA_DISK_GOAL_MB,
        ),
    ]
    info = {
        "second_env": second,
        "second_env_files": len(files),
        "second_env_hardlinked": linked,
        "same_filesystem_as_cache": same_fs,
        "runs": {"pip": pip_times, "cold_empty": cold_empty, "cold_warm": cold_warm},
    }
    return rows, info


# ---------------------------------------------------------------- 2. sandbox


def bench_sandbox(config, spec, repeat: int) -> tuple[list[Row], dict]:
    from appliance.harness.checkout import worktree
    from appliance.harness.envs import ensure_env
    from appliance.harness.testrun import run_tests

    section = "Sandbox overhead (one run of the largest suite)"
    env = ensure_env(config, spec)
    sandboxed, direct = [], []
    own = defaultdict(list)
    tests = set()
    _progress(f"sandbox: {repeat} alternated sandboxed / direct runs of {spec.sha[:12]}")
    with worktree(config, spec.repo, spec.sha, label="bench-sandbox") as work:

        def run_sandboxed() -> None:
            start = time.perf_counter()
            run = run_tests(config, spec, work, env)
            sandboxed.append(time.perf_counter() - start)
            if run.status != "ok":
                raise SystemExit(f"sandboxed run failed: {run.status}: {run.detail}")
            tests.add(("sandboxed", len(run.outcomes)))
            own["sandboxed"].append(_pytest_time(run.output_tail))

        def run_direct(into: list, env_path: Path, name: str) -> None:
            seconds, count, reported = _run_direct(spec, work, env_path)
            into.append(seconds)
            tests.add((name, count))
            own[name].append(reported)

        order: list[Callable[[], None]] = [
            run_sandboxed,
            lambda: run_direct(direct, env.path, "direct"),
        ]
        for step in order:  # warm-up: the first sandboxed run also checks bwrap works
            step()
        for done in (sandboxed, direct, own):
            done.clear()
        for i in range(repeat):
            for step in order[i % 2 :] + order[: i % 2]:
                step()
    if len({count for _, count in tests}) != 1:
        raise SystemExit(f"the runs saw different numbers of tests: {sorted(tests)}")
    base, sand = statistics.median(direct), statistics.median(sandboxed)
    rows = [
        Row(section, "direct pytest, same argv and env (baseline)", base, ratio=1.0),
        Row(
            section,
            "run_tests, sandboxed",
            sand,
            ratio=sand / base,
            goal=f"≤ {SANDBOX_RATIO_GOAL:.2f}×",
            ok=sand / base <= SANDBOX_RATIO_GOAL,
        ),
    ]

    def median_own(name: str) -> float | None:
        known = [t for t in own[name] if t is not None]
        return statistics.median(known) if known else None

    info = {
        "tests": tests.pop()[1],
        "sandbox_s_per_run": sand - base,
        "pytest_reported_s": {name: median_own(name) for name in ("sandboxed", "direct")},
        "runs": {"sandboxed": sandboxed, "direct": direct},
    }
    return rows, info


# ------------------------------------------------------------ 3. project install


def bench_install(config, spec, repeat: int) -> tuple[list[Row], dict]:
    """The per-commit project install against the test run it comes before."""
    from appliance.harness.checkout import worktree
    from appliance.harness.envs import ensure_env
    from appliance.harness.install import ensure_project
    from appliance.harness.testrun import run_tests

    section = "Project install per commit (own build backend, in the sandbox)"
    env = ensure_env(config, spec)
    cold, warm, tests = [], [], []
    _progress(f"install: {repeat} cold and warm installs of {spec.sha[:12]}, each with a run")
    for _ in range(repeat + 1):  # the first round warms the page cache and is dropped
        with worktree(config, spec.repo, spec.sha, label="bench-install-cold") as work:
            start = time.perf_counter()
            project = ensure_project(config, spec, work, env)
            if project is None:
                raise SystemExit(f"{spec.package} declares no build: nothing to install")
            cold.append(time.perf_counter() - start)
            shutil.rmtree(project.venv.parent)  # the next round builds again
        with worktree(config, spec.repo, spec.sha, label="bench-install-warm") as work:
            ensure_project(config, spec, work, env)  # built here: this one is not timed
        with worktree(config, spec.repo, spec.sha, label="bench-install-warm") as work:
            start = time.perf_counter()
            project = ensure_project(config, spec, work, env)
            warm.append(time.perf_counter() - start)
            assert project is not None and not project.built
            start = time.perf_counter()
            run = run_tests(config, spec, work, env)
            tests.append(time.perf_counter() - start)
            if run.status != "ok":
                raise SystemExit(f"run after the install failed: {run.status}: {run.detail}")
        shutil.rmtree(project.venv.parent)
    cold, warm, tests = cold[1:], warm[1:], tests[1:]
    base = statistics.median(tests)
    warm_s, cold_s = statistics.median(warm), statistics.median(cold)
    rows = [
        Row(section, "test run, project installed (baseline)", base, ratio=1.0),
        Row(
            section,
            "install reused for a new worktree (warm caches)",
            warm_s,
            ratio=warm_s / base,
            goal=f"≤ {INSTALL_RATIO_GOAL:.2f}×",
            ok=warm_s / base <= INSTALL_RATIO_GOAL,
        ),
        Row(
            section, "install built: backend run in the sandbox (cold)", cold_s, ratio=cold_s / base
        ),
    ]
    return rows, {"editable": project.editable, "cold": cold, "warm": warm, "tests": tests}


# ---------------------------------------------------------------- 4. grading


class _Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.pytest_own = 0.0
        self.runs = 0
        self.builds = 0

    def add(self, name: str, start: float) -> None:
        self.seconds[name] += time.perf_counter() - start


@contextmanager
def _instrumented(phases: _Phases):
    """Time grading's phases by wrapping the functions grading.py calls (nothing else
    changes): worktree (create = checkout, exit = cleanup), overlay, run_tests, env lookup."""
    from appliance.harness import grading, testrun

    real = {n: getattr(grading, n) for n in ("worktree", "overlay", "run_tests", "env_or_failure")}
    real_project = testrun.ensure_project

    def ensure_project(*args, **kwargs):
        start = time.perf_counter()
        project = real_project(*args, **kwargs)
        phases.add("project install (build or reuse)", start)
        phases.builds += bool(project is not None and project.built)
        return project

    @contextmanager
    def worktree(*args, **kwargs):
        stack = ExitStack()
        start = time.perf_counter()
        work = stack.enter_context(real["worktree"](*args, **kwargs))
        phases.add("checkout (new worktree)", start)
        try:
            yield work
        finally:
            start = time.perf_counter()
            stack.close()
            phases.add("worktree cleanup", start)

    def overlay(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real["overlay"](*args, **kwargs)
        finally:
            phases.add("overlay of the commit's test files", start)

    def run_tests(*args, **kwargs):
        start = time.perf_counter()
        run = real["run_tests"](*args, **kwargs)
        phases.add("test runs", start)
        phases.runs += 1
        phases.pytest_own += _pytest_time(run.output_tail) or 0.0
        return run

    def env_or_failure(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real["env_or_failure"](*args, **kwargs)
        finally:
            phases.add("environment lookup", start)

    patched = {
        "worktree": worktree,
        "overlay": overlay,
        "run_tests": run_tests,
        "env_or_failure": env_or_failure,
    }
    try:
        for name, fn in patched.items():
            setattr(grading, name, fn)
        testrun.ensure_project = ensure_project
        yield
    finally:
        for name, fn in real.items():
            setattr(grading, name, fn)
        testrun.ensure_project = real_project


def _ideal(config, spec, env_path: Path, gold_runs: int) -> float:
    """The same test runs grade_gold made, direct, on ready trees: only pytest's time."""
    from appliance.harness.checkout import overlay, worktree

    total = 0.0
    with worktree(config, spec.repo, spec.parent, label="bench-ideal-before") as work:
        overlay(spec.repo, spec.sha, spec.test_files, work / "repo")
        total += _run_direct(spec, work, env_path)[0]
    with worktree(config, spec.repo, spec.sha, label="bench-ideal-gold") as work:
        for _ in range(gold_runs):
            total += _run_direct(spec, work, env_path)[0]
    return total


def bench_grading(config, specs, commits: int) -> tuple[list[Row], list[Row], dict]:
    from appliance.harness.envs import ensure_env
    from appliance.harness.grading import grade_gold

    section = "Gold grading throughput"
    chosen = [s for s in specs if s.test_files][:commits]
    for spec in chosen:
        ensure_env(config, spec)  # warm, as the brief of this part says
    phases = _Phases()
    graded = ideal = 0.0
    results = []
    _progress(f"grading: grade_gold of {len(chosen)} commits, each then run direct (ideal)")
    for spec in chosen:
        with _instrumented(phases):
            start = time.perf_counter()
            result = grade_gold(config, spec)
            graded += time.perf_counter() - start
        results.append(result)
        if result.status != "ok":
            raise SystemExit(f"{spec.sha[:12]}: infrastructure failure: {result.reason}")
        gold_runs = sum(1 for r in result.runs if r["side"] == "gold")
        ideal += _ideal(config, spec, ensure_env(config, spec).path, gold_runs)
    per_minute = len(chosen) / graded * 60
    runs = phases.runs
    rows = [
        Row(section, f"direct pytest of the same {runs} runs (ideal)", ideal, ratio=1.0),
        Row(section, f"grade_gold of {_commits(len(chosen))}", graded, ratio=graded / ideal),
        Row(
            section,
            "commits graded per minute",
            per_minute,
            "/min",
            ratio=per_minute / (len(chosen) / ideal * 60),
        ),
    ]
    # The project install happens inside run_tests: counted as its own phase.
    test_runs = phases.seconds.pop("test runs", 0.0)
    test_runs -= phases.seconds.get("project install (build or reuse)", 0.0)
    where = [
        ("test runs: pytest's own time (as it reports)", phases.pytest_own),
        (
            "test runs: python start-up, imports, sandbox",
            test_runs - phases.pytest_own,
        ),
        *sorted(phases.seconds.items(), key=lambda kv: -kv[1]),
    ]
    where.append(("other (grading logic, classification)", graded - sum(s for _, s in where)))
    time_rows = [Row("where the time goes", name, s, ratio=s / graded) for name, s in where]
    info = {
        "commits": len(chosen),
        "usable": sum(1 for r in results if r.usable),
        "runs": runs,
        "gold_runs": config.settings.harness.gold_runs,
        "sandboxed_minus_ideal_s": test_runs - ideal,
        "project_builds": phases.builds,
    }
    return rows, time_rows, info


# ---------------------------------------------------------------- output


def _print_table(title: str, rows: list[Row], share: bool = False) -> None:
    """Rows with measured value and ratio; as shares of a total (no goals) when `share`."""
    head = f"  {'operation':<44} {'measured':>10} {'share' if share else 'ratio':>11}"
    print(title)
    head = head if share else f"{head}  {'goal':<22} result"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for row in rows:
        if share:
            print(f"  {row.name:<44} {_value(row):>10} {(row.ratio or 0) * 100:>9.1f} %")
            continue
        result = "" if row.ok is None else ("PASS" if row.ok else "MISS")
        line = f"  {row.name:<44} {_value(row):>10} {_ratio(row.ratio):>11}  {row.goal:<22} "
        print((line + result).rstrip())
    print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Ratios are measured / baseline, both from this run: below 1× is faster.",
    )
    parser.add_argument(
        "--repeat", type=_positive, default=10, help="sandboxed/direct run pairs (default 10)"
    )
    parser.add_argument(
        "--env-repeat",
        type=_positive,
        default=3,
        help="builds of each cold environment kind and of the pip baseline (default 3)",
    )
    parser.add_argument(
        "--commits", type=_positive, default=10, help="commits to gold-grade (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args()
    if not (DEMO / "manifest.json").is_file():
        print("repo_packages/demo/ is missing: run ./install.sh first", file=sys.stderr)
        return 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forge-harness-bench-") as tmpdir:
        tmp = Path(tmpdir)
        _progress("ingesting the demo into a temporary FORGE_HOME")
        config, _db, specs = _forge_home(tmp)
        largest = specs[-1]
        env_rows, env_info = bench_envs(config, largest, tmp, args.env_repeat, args.repeat)
        env_info.pop("second_env")
        sandbox_rows, sandbox_info = bench_sandbox(config, largest, args.repeat)
        install_rows, install_info = bench_install(config, largest, args.repeat)
        grading_rows, time_rows, grading_info = bench_grading(config, specs, args.commits)
    rows = env_rows + sandbox_rows + install_rows + grading_rows
    missed = [row.name for row in rows if row.ok is False]
    elapsed = time.perf_counter() - started
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "package": largest.package,
        "elapsed_s": round(elapsed, 1),
    }
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine,
                    "rows": [asdict(row) for row in rows],
                    "where_the_time_goes": [asdict(row) for row in time_rows],
                    "environments": env_info,
                    "sandbox": sandbox_info,
                    "install": install_info,
                    "grading": grading_info,
                    "goals_met": not missed,
                    "missed": missed,
                },
                indent=2,
                default=str,
                ensure_ascii=False,
            )
        )
    else:
        print(
            f"\n{largest.package}: {len(specs)} commits; {machine['cpus']} CPUs, Python "
            f"{machine['python']}; environments median of {args.env_repeat}, runs median "
            f"of {args.repeat}\n"
        )
        by_section: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            by_section[row.section].append(row)
        for title, section_rows in by_section.items():
            _print_table(title, section_rows)
        linked, files = env_info["second_env_hardlinked"], env_info["second_env_files"]
        same = "same filesystem" if env_info["same_filesystem_as_cache"] else "OTHER filesystem"
        print(f"  second env: {linked} of {files} files hardlinked into the uv cache ({same})")
        own = sandbox_info["pytest_reported_s"]
        print(
            f"  suite: {sandbox_info['tests']} tests; pytest reports {own['direct'] or 0:.2f} s "
            f"direct, {own['sandboxed'] or 0:.2f} s sandboxed; sandbox adds "
            f"{sandbox_info['sandbox_s_per_run'] * 1000:.0f} ms a run"
        )
        print(
            f"  grading: {_commits(grading_info['commits'])} ({grading_info['usable']} usable), "
            f"gold_runs = {grading_info['gold_runs']}, {grading_info['runs']} sandboxed runs, "
            f"{grading_info['project_builds']} project builds; "
            f"sandboxed − ideal = {grading_info['sandboxed_minus_ideal_s']:.2f} s\n"
        )
        _print_table(
            f"Where the time goes ({_commits(grading_info['commits'])} graded)",
            time_rows,
            share=True,
        )
        verdict = "all goals met" if not missed else f"goals MISSED: {', '.join(missed)}"
        print(f"{verdict} (whole benchmark: {elapsed:.0f} s)")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
