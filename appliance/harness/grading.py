"""Grading: which tests a commit makes pass (the gold run), and whether an edit does too.

Gold run: the parent with the commit's test files ("before"), and the commit itself run
N times ("gold"). FAIL_TO_PASS = tests that pass in every gold run and fail before (or
whose module could not even be imported before); PASS_TO_PASS = tests that pass in both.
Tests whose gold outcome differs between runs are flaky and left out of both. A commit
is a usable task only with at least one FAIL_TO_PASS.

An edit is resolved when every FAIL_TO_PASS passes and no PASS_TO_PASS breaks; a
skipped or missing test counts as not passing. Failures of the machinery (environment,
sandbox, or a gold run that itself failed) are "infra", never counted against a model.
A run whose result channels disagree (testrun's "tampered") makes the edit "tampered":
never resolved, whatever its tests said; in a gold run it makes the commit unusable.
An edit that touches test infrastructure is graded as its tests dictate and flagged
(`infrastructure_flags`).
"""

from __future__ import annotations

import configparser
import re
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from appliance.config import Config
from appliance.harness.checkout import CheckoutError, overlay, worktree
from appliance.harness.edits import EditNotApplied, apply_edits, diff_of
from appliance.harness.envs import Environment
from appliance.harness.spec import CommitSpec, is_test_path
from appliance.harness.testrun import TestRun, env_or_failure, run_tests
from appliance.packages import gitsafe
from appliance.packages.gitsafe import GitError
from appliance.records import as_json

# Statuses that say nothing about the code under test: the machinery failed.
INFRA = ("env_failed", "sandbox_error")


@dataclass(frozen=True)
class GoldResult:
    sha: str
    status: str  # "ok" or "infra"
    usable: bool
    reason: str  # why not usable, or a short summary
    fail_to_pass: tuple[str, ...] = ()
    pass_to_pass: tuple[str, ...] = ()
    flaky: tuple[str, ...] = ()
    runs: tuple[dict, ...] = ()  # TestRun.summary() of each run, before first
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        """The three test lists counted, and given in full under "tests"."""
        tests = {
            "fail_to_pass": self.fail_to_pass,
            "pass_to_pass": self.pass_to_pass,
            "flaky": self.flaky,
        }
        counts = {name: len(ids) for name, ids in tests.items()}
        keys = ("sha", "status", "usable", "reason", *tests, "tests", "runs", "duration_s")
        return as_json(self, *keys, **counts, tests=tests, duration_s=round(self.duration_s, 3))


def _module(test_id: str) -> str:
    return test_id.split("::", 1)[0]


def classify_gold(
    spec: CommitSpec, before: TestRun, gold: Sequence[TestRun]
) -> tuple[str, bool, str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(status, usable, reason, fail_to_pass, pass_to_pass, flaky) from finished runs."""
    if not spec.test_files:
        return "ok", False, "the commit changes no test file", (), (), ()
    for run in (before, *gold):
        if run.status in INFRA:
            return "infra", False, f"{run.status}: {run.detail}", (), (), ()
        if run.status == "build_failed":  # the commit's own tree: never a model's doing
            return "infra", False, f"env_failed: {run.detail}", (), (), ()
    for run, side in [(before, "before the commit"), *((g, "at the commit") for g in gold)]:
        if run.status == "tampered":  # the commit's own code rewrote what its tests said
            return "ok", False, f"tampered: the run {side} disagrees: {run.detail}", (), (), ()
    bad = next((run for run in gold if not run.ran), None)
    if bad is not None:
        return (
            "infra",
            False,
            f"the commit's own test run failed ({bad.status}): {bad.detail}",
            (),
            (),
            (),
        )
    # Modules that do not import at the commit (test data from a submodule the package
    # cannot hold, an optional dependency) are left out, the rest grades; unless they are
    # the commit's own test files, or they differ between gold runs.
    broken = {run.collection_errors for run in gold}
    if len(broken) > 1:
        return "infra", False, "the gold runs disagree on which modules import", (), (), ()
    left_out = gold[0].collection_errors
    own = [m for m in left_out if m in spec.test_files]
    if own:
        reason = f"the commit's own test module {own[0]} does not import at the commit"
        return "infra", False, reason, (), (), ()
    if not before.ran:
        # Only import errors of the changed test files are expected before the commit.
        return (
            "infra",
            False,
            f"the run before the commit failed ({before.status}): {before.detail}",
            (),
            (),
            (),
        )
    ids = set().union(*(run.outcomes for run in gold))
    flaky = sorted(t for t in ids if len({run.outcomes.get(t) for run in gold}) > 1)
    f2p, p2p = [], []
    for test in sorted(ids - set(flaky)):
        if gold[0].outcomes[test] != "passed":
            continue
        was = before.outcomes.get(test)
        if was == "passed":
            p2p.append(test)
        elif was in ("failed", "error") or (
            was is None and _module(test) in before.collection_errors
        ):
            f2p.append(test)
    usable = bool(f2p)
    reason = (
        f"{len(f2p)} test(s) fail before the commit and pass at it"
        if usable
        else "no test fails before the commit and passes at it"
    )
    if left_out:
        reason += f" ({len(left_out)} module(s) that do not import left out: {left_out[0]})"
    return "ok", usable, reason, tuple(f2p), tuple(p2p), tuple(flaky)


def grade_gold(
    config: Config,
    spec: CommitSpec,
    *,
    runs: int | None = None,
    on_run: Callable[[str, TestRun], None] | None = None,
) -> GoldResult:
    """Run the gold grading of one commit: before once, the commit `runs` times."""
    started = time.monotonic()
    runs = runs or config.settings.harness.gold_runs
    env = env_or_failure(config, spec)
    if isinstance(env, TestRun):
        status, usable, reason, *_ = classify_gold(spec, env, [env])
        return GoldResult(spec.sha, status, usable, reason, runs=(env.summary(),),
                          duration_s=time.monotonic() - started)  # fmt: skip
    if not spec.test_files:
        return GoldResult(spec.sha, "ok", False, "the commit changes no test file",
                          duration_s=time.monotonic() - started)  # fmt: skip
    try:
        before, gold = _gold_runs(config, spec, env, runs, on_run)
    except CheckoutError as exc:
        # The tree itself is unsafe to write out (validation refuses such packages now;
        # this is one ingested before it did): never usable, and no use grading it again.
        return GoldResult(spec.sha, "ok", False, f"the commit cannot be checked out: {exc.message}",
                          duration_s=time.monotonic() - started)  # fmt: skip
    status, usable, reason, f2p, p2p, flaky = classify_gold(spec, before, gold)
    return GoldResult(
        spec.sha,
        status,
        usable,
        reason,
        f2p,
        p2p,
        flaky,
        runs=tuple(
            r.summary() | {"side": side}
            for r, side in [(before, "before"), *((g, "gold") for g in gold)]
        ),  # fmt: skip
        duration_s=time.monotonic() - started,
    )


def _gold_runs(
    config: Config,
    spec: CommitSpec,
    env: Environment,
    runs: int,
    on_run: Callable[[str, TestRun], None] | None,
) -> tuple[TestRun, list[TestRun]]:
    """The run before the commit (its parent with the commit's tests), then the gold runs."""
    with worktree(config, spec.repo, spec.parent, label=f"{spec.sha[:12]}-before") as work:
        overlay(spec.repo, spec.sha, spec.test_files, work / "repo")
        before = run_tests(config, spec, work, env)
    if on_run:
        on_run("before", before)
    gold: list[TestRun] = []
    for attempt in range(runs):
        # A fresh checkout each time: nothing one run writes can change the next.
        with worktree(config, spec.repo, spec.sha, label=f"{spec.sha[:12]}-gold") as work:
            gold.append(run_tests(config, spec, work, env))
        if on_run:
            on_run(f"gold {attempt + 1}/{runs}", gold[-1])
        if gold[-1].status in INFRA or not gold[-1].ran:
            break  # a broken (or tampered) gold run is not retried into a result
    return before, gold


@dataclass(frozen=True)
class PatchVerdict:
    verdict: str  # resolved | failed | not_applied | infra | tampered
    reason: str
    fail_to_pass: dict[str, str] = field(default_factory=dict)  # test -> outcome under the edit
    pass_to_pass_broken: dict[str, str] = field(default_factory=dict)
    changed: tuple[str, ...] = ()  # paths the edit changed
    run: dict | None = None
    diff: str = ""
    flags: tuple[str, ...] = ()  # "KIND: path" for each piece of test infrastructure edited

    @property
    def resolved(self) -> bool:
        return self.verdict == "resolved"

    def to_dict(self) -> dict:
        """Everything but the diff."""
        keys = ("verdict", "reason", "fail_to_pass", "pass_to_pass_broken", "changed", "flags")
        return as_json(self, *keys, "run")


def classify_patch(gold: GoldResult, run: TestRun) -> PatchVerdict:
    """The verdict for a test run of the parent with an edit and the commit's tests."""
    if run.status in INFRA:
        return PatchVerdict("infra", f"{run.status}: {run.detail}", run=run.summary())
    if run.status == "tampered":
        reason = f"the run's results were tampered with: {run.detail}"
        return PatchVerdict("tampered", reason, run=run.summary())
    if run.status == "build_failed":
        # The commit's tree builds (its gold runs did), so the edit broke the build.
        return PatchVerdict(
            "failed", f"the project does not build with the edit: {run.detail}", run=run.summary()
        )
    if not run.ran:
        # The gold run of the same tests finished, so a run that did not is the edit's doing.
        return PatchVerdict("failed", f"the tests did not finish: {run.detail}", run=run.summary())

    def outcome(test: str) -> str:
        if test in run.outcomes:
            return run.outcomes[test]
        return "error" if _module(test) in run.collection_errors else "missing"

    f2p = {t: outcome(t) for t in gold.fail_to_pass}
    broken = {t: o for t in gold.pass_to_pass if (o := outcome(t)) != "passed"}
    failing = sorted(t for t, o in f2p.items() if o != "passed")
    if not failing and not broken:
        kept = len(gold.pass_to_pass)
        reason = f"all {len(f2p)} FAIL_TO_PASS pass and all {kept} PASS_TO_PASS still pass"
        return PatchVerdict("resolved", reason, f2p, broken, run=run.summary())
    parts = []
    if failing:
        parts.append(
            f"{len(failing)} of {len(f2p)} FAIL_TO_PASS do not pass "
            f"({failing[0]}: {f2p[failing[0]]})"
        )
    if broken:
        first = sorted(broken)[0]
        parts.append(f"{len(broken)} PASS_TO_PASS broke ({first}: {broken[first]})")
    return PatchVerdict("failed", "; ".join(parts), f2p, broken, run=run.summary())


def grade_patch(
    config: Config, spec: CommitSpec, gold: GoldResult, kind: str, payload: object
) -> PatchVerdict:
    """Apply an edit to the commit's parent, add the commit's tests, run, and grade."""
    if gold.status != "ok" or not gold.usable:
        return PatchVerdict("infra", f"the commit is not a usable task: {gold.reason}")
    env = env_or_failure(config, spec)
    if isinstance(env, TestRun):
        return PatchVerdict("infra", f"{env.status}: {env.detail}", run=env.summary())
    try:
        return _grade_patch_in_worktree(config, spec, gold, env, kind, payload)
    except CheckoutError as exc:
        return PatchVerdict("infra", f"the commit cannot be checked out: {exc.message}")


def _grade_patch_in_worktree(
    config: Config, spec: CommitSpec, gold: GoldResult, env: Environment, kind: str, payload: object
) -> PatchVerdict:
    with worktree(config, spec.repo, spec.parent, label=f"{spec.sha[:12]}-patch") as work:
        repo = work / "repo"
        try:
            changed = apply_edits(repo, kind, payload)
        except EditNotApplied as exc:
            return PatchVerdict("not_applied", exc.message)
        diff = diff_of(repo)
        flags = infrastructure_flags(spec, repo, changed)
        # The edit may not change the tests that grade it: test files it touched are put
        # back as they were, then the commit's own test files are laid over them.
        touched_tests = [p for p in changed if is_test_path(p)]
        _restore(spec, touched_tests, repo)
        overlay(spec.repo, spec.sha, spec.test_files, repo)
        run = run_tests(config, spec, work, env)
    verdict = classify_patch(gold, run)
    note = (
        f" (its changes to test files {', '.join(touched_tests)} were ignored)"
        if touched_tests
        else ""
    )
    return PatchVerdict(
        verdict.verdict,
        verdict.reason + note,
        verdict.fail_to_pass,
        verdict.pass_to_pass_broken,
        tuple(changed),
        verdict.run,
        diff,
        flags,
    )


# Test infrastructure: what decides how pytest runs and what it reports. The result stream
# (stream.py) cannot see code in pytest's own process rewriting a report before it is
# made; these are the ways a patch gets such code in, so an edit to any of them is flagged.
STARTUP_HOOKS = ("sitecustomize.py", "usercustomize.py")  # and any *.pth
PYTEST_CONFIG_FILES = ("pytest.ini", ".pytest.ini", "pytest.toml", ".pytest.toml")
SHARED_CONFIG_FILES = (
    "setup.cfg",
    "tox.ini",
    "pyproject.toml",
)  # flagged when the pytest part changes
INI_SECTIONS = ("pytest", "tool:pytest")
# What a module needs to reach into pytest or its results from inside its process: hook
# functions, plugin registration, pytest's internals, the JUnit report, the witness and its
# channel, or the objects of other code found through the garbage collector.
PYTEST_REACH = re.compile(
    rb"\bdef\s+pytest_\w+|\bpytest_plugins\b|\b_pytest\b|\bpluggy\b|\bpluginmanager\b"
    rb"|junitxml|forge_witness|FORGE_WITNESS|results\.fifo|\bgc\.get_(?:objects|referrers)\b"
)
MAX_SCANNED_BYTES = 8 << 20


def infrastructure_flags(spec: CommitSpec, repo: Path, changed: Sequence[str]) -> tuple[str, ...]:
    """ "KIND: path" for each file of `changed` (as the edit left them in `repo`) that is
    test infrastructure: a conftest (ignored anyway: test files are laid over), a startup
    hook (sitecustomize, usercustomize, .pth), pytest configuration, or a module that
    gained pytest hooks or a reach into pytest or its results (PYTEST_REACH)."""
    flags = []
    for path in changed:
        name = PurePosixPath(path).name
        kind = None
        if name == "conftest.py":
            kind = "conftest"
        elif name in STARTUP_HOOKS or name.endswith(".pth"):
            kind = "startup hook"
        elif name in PYTEST_CONFIG_FILES:
            kind = "pytest config"
        elif name in SHARED_CONFIG_FILES:
            old, new = _parent_bytes(spec, path), _edited_bytes(repo, path)
            if _pytest_config(name, old) != _pytest_config(name, new):
                kind = "pytest config"
        elif name.endswith(".py") and not is_test_path(path):
            old, new = _parent_bytes(spec, path), _edited_bytes(repo, path)
            reach = {m.group() for m in PYTEST_REACH.finditer(new or b"")}
            if reach - {m.group() for m in PYTEST_REACH.finditer(old or b"")}:
                kind = "pytest internals"
        if kind:
            flags.append(f"{kind}: {path}")
    return tuple(flags)


def _parent_bytes(spec: CommitSpec, path: str) -> bytes | None:
    try:
        return gitsafe.git(["cat-file", "blob", f"{spec.parent}:{path}"], git_dir=spec.repo)
    except GitError:
        return None  # not a file at the parent


def _edited_bytes(repo: Path, path: str) -> bytes | None:
    target = repo / path
    if target.is_symlink() or not target.is_file():
        return None
    with target.open("rb") as handle:
        return handle.read(MAX_SCANNED_BYTES)


def _pytest_config(name: str, data: bytes | None) -> object:
    """The pytest part of a shared configuration file, comparable between two versions."""
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace")
    try:
        if name == "pyproject.toml":
            tool = tomllib.loads(text).get("tool", {})
            return tool.get("pytest") if isinstance(tool, dict) else None
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.read_string(text)
        return {s: dict(parser[s]) for s in INI_SECTIONS if parser.has_section(s)} or None
    except (tomllib.TOMLDecodeError, configparser.Error, RecursionError, ValueError):
        return ("unreadable", text)  # compared as text: any change to it counts


def _restore(spec: CommitSpec, paths: Sequence[str], repo) -> None:
    """Put `paths` back as they are at the parent (removing files the parent lacks)."""
    if paths:
        overlay(spec.repo, spec.parent, list(paths), repo)


__all__ = [
    "GoldResult",
    "PatchVerdict",
    "classify_gold",
    "classify_patch",
    "grade_gold",
    "grade_patch",
    "infrastructure_flags",
]
