"""Run a package's test command on a worktree, in the sandbox, and read what happened.

pytest runs with a JUnit XML report, no cache provider, collection errors reported
without stopping the run, and Forge's witness plugin loaded first, streaming each outcome
to Forge as it is made (stream.py). The result's `status` separates a run that produced
test outcomes ("ok", or "collection_error" when some modules did not import) from runs
that produced none: "no_tests", "timeout", "out_of_memory", "limit", "crashed",
"env_failed", "sandbox_error", "build_failed" (the project's own build failed: see
install.py), and "tampered" when the stream, the JUnit report and
pytest's exit status disagree (the code under test rewrote what its run said).

This is the one way Forge runs a package's tests: gold grading, patch grading and
validation's dry run (`collect_only`: the same run with `--collect-only` appended, its
result the collected ids, collection errors and whether the output shows the network
was tried) all go through `run_tests`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from appliance.config import Config
from appliance.errors import SandboxError
from appliance.harness.envs import Environment, EnvironmentBroken, ensure_env
from appliance.harness.install import (
    NETWORK_SIGNS,
    WORKTREE,
    Project,
    ProjectBuildFailed,
    ensure_project,
)
from appliance.harness.junit import ReportUnreadable, read_report
from appliance.harness.spec import CommitSpec
from appliance.harness.stream import (
    Stream,
    WitnessChannel,
    cross_check,
    read_stream,
    witness_channel,
)
from appliance.sandbox import Bind, Limits, SandboxRequest, SandboxResult, run_sandboxed

REPORT = "report.xml"
TAIL_LINES = 40
# Statuses where the tests themselves ran and reported per-test outcomes.
RAN = ("ok", "collection_error")
# What a test run's output shows when its code tried to reach the network.
TEST_NETWORK_SIGNS = (*NETWORK_SIGNS, "ConnectionRefusedError")


@dataclass(frozen=True)
class TestRun:
    status: str
    outcomes: dict[str, str] = field(default_factory=dict)
    collection_errors: tuple[str, ...] = ()
    returncode: int | None = None
    duration_s: float = 0.0
    detail: str = ""  # what happened, in words
    output_tail: str = ""
    collected: tuple[str, ...] = ()  # the test ids pytest collected, as the witness sent them
    network: bool = False  # the output shows a try to reach the network

    __test__ = False  # not a pytest test class

    @property
    def ran(self) -> bool:
        return self.status in RAN

    def counts(self) -> dict[str, int]:
        counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for outcome in self.outcomes.values():
            counts[outcome] += 1
        return counts

    def summary(self) -> dict:
        return {
            "status": self.status,
            "detail": self.detail,
            "returncode": self.returncode,
            "duration_s": round(self.duration_s, 3),
            "counts": self.counts(),
            "collection_errors": list(self.collection_errors),
        }


def pytest_argv(
    spec: CommitSpec,
    report: Path,
    witness: tuple[str, ...] = (),
    *,
    collect_only: bool = False,
    project: Project | None = None,
) -> tuple[str, ...]:
    """The test command with Forge's options. With the project installed, pytest runs on
    the overlay's python (`python -m pytest`): the shared environment's `pytest` script
    would start that environment's python, which does not see the project."""
    command = tuple(spec.test_command)
    if project is not None:
        rest = command[1:] if command[0] == "pytest" else command[3:]
        command = (str(project.python), "-m", "pytest", *rest)
    return (
        *command,
        *witness,
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        f"--junitxml={report}",
        "-o",
        "junit_family=xunit1",
        "-o",
        "junit_logging=no",
        *(("--collect-only",) if collect_only else ()),
    )


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])


def _collection_only(stream: Stream) -> Stream:
    """The stream of a `--collect-only` run, ready for cross_check: no test may report (one
    that does ran, which a run that only collects never does), so every collected test
    counts as accounted for."""
    if stream.problem:
        return stream
    if stream.reported:
        first = sorted(stream.reported)[0]
        return replace(
            stream,
            problem=f"{len(stream.reported)} test(s) ran in a run that only collects ({first})",
        )
    return replace(stream, reported=stream.collected or frozenset())


def run_tests(
    config: Config, spec: CommitSpec, work: Path, env: Environment, *, collect_only: bool = False
) -> TestRun:
    """Run the test suite of the worktree at `work` (as made by checkout.worktree); with
    `collect_only`, only collect it (validation's dry run), through the same request:
    install the project, run pytest in the sandbox, then read what it reported."""
    report = work / "out" / REPORT
    report.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        project = ensure_project(config, spec, work, env)
    except ProjectBuildFailed as exc:
        return TestRun(
            "build_failed",
            detail=exc.message,
            duration_s=time.monotonic() - started,
            output_tail=_tail(exc.output),
            network="network" in exc.message,
        )
    with witness_channel(work) as witness:
        request = _request(config, spec, work, env, project, witness, collect_only)
        try:
            result = run_sandboxed(request, config)
        except SandboxError as exc:
            return TestRun("sandbox_error", detail=str(exc), duration_s=time.monotonic() - started)
        stream = read_stream(witness)
    if collect_only:
        stream = _collection_only(stream)
    return _read_run(spec, result, stream, report, collect_only)


def _request(
    config: Config,
    spec: CommitSpec,
    work: Path,
    env: Environment,
    project: Project | None,
    witness: WitnessChannel,
    collect_only: bool,
) -> SandboxRequest:
    """The sandbox request of one test run. The repository's code is importable as its
    suite expects: installed (editable) when it declares a build, and from src/ when it
    uses that layout and from the root (what `python -m pytest` gives) in any case. The
    sandbox sees the tree at WORKTREE."""
    repo, out = work / "repo", work / "out"
    paths = [str(WORKTREE / "src")] if (repo / "src").is_dir() else []
    venv = project.venv if project is not None else env.path
    binds = (Bind(project.venv),) if project is not None else ()
    return SandboxRequest(
        argv=pytest_argv(
            spec, out / REPORT, witness.argv, collect_only=collect_only, project=project
        ),
        cwd=WORKTREE,
        binds=(
            Bind(repo, writable=True, target=WORKTREE),
            Bind(out, writable=True),
            Bind(env.path),
            *binds,
            Bind(witness.folder),  # read-only: the plugin, and the FIFO it writes to
        ),
        env={
            "PATH": ":".join(dict.fromkeys([str(venv / "bin"), str(env.bin)]))
            + ":/usr/local/bin:/usr/bin:/bin",
            "VIRTUAL_ENV": str(venv),
            # The witness first, so nothing of the repository can stand in for it.
            "PYTHONPATH": ":".join([str(witness.folder), *paths, str(WORKTREE)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            **witness.env,
        },
        limits=Limits.from_settings(config.settings.sandbox, spec.test_timeout_s),
    )


def _read_run(
    spec: CommitSpec, result: SandboxResult, stream: Stream, report: Path, collect_only: bool
) -> TestRun:
    """What a finished run says: a limit it met, a report that disagrees with the stream
    and the exit status (tampered), or the outcomes its JUnit report holds."""
    base = {
        "returncode": result.returncode,
        "duration_s": result.duration_s,
        "output_tail": _tail(result.output),
        "collected": tuple(sorted(stream.collected or ())),
        "network": any(sign in result.output for sign in TEST_NETWORK_SIGNS),
    }
    if result.limit in ("wall_time", "cpu_time"):
        kind = "" if result.limit == "wall_time" else "CPU-time "
        detail = f"the test run passed its {spec.test_timeout_s:g} s {kind}limit and was killed"
        return TestRun("timeout", detail=detail, **base)
    if result.limit == "memory":
        return TestRun("out_of_memory", detail=result.describe(), **base)
    if result.limit is not None:
        return TestRun("limit", detail=result.describe(), **base)
    try:
        parsed, unreadable = read_report(report), None
    except ReportUnreadable as exc:
        parsed, unreadable = None, exc
    # Before anything is read from the report: it is only believed when the stream and
    # the exit status tell the same story.
    problem = cross_check(stream, parsed, result.returncode)
    if problem:
        return TestRun("tampered", detail=problem, **base)
    if result.returncode == 5:
        return TestRun("no_tests", detail="pytest collected no tests", **base)
    if parsed is None:
        return TestRun("crashed", detail=f"exit {result.returncode}: {unreadable}", **base)
    if "MemoryError" in result.output and result.returncode not in (0, 1):
        return TestRun("out_of_memory", detail="the run ran out of memory (MemoryError)", **base)
    found = {"outcomes": parsed.outcomes, "collection_errors": parsed.collection_errors}
    # 2 is "interrupted" (collection errors can give it); 3 and 4 are pytest's internal and
    # usage errors.
    if result.returncode not in (0, 1) and not (
        result.returncode == 2 and parsed.collection_errors
    ):
        return TestRun("crashed", detail=f"pytest exited {result.returncode}", **found, **base)
    if parsed.collection_errors:
        errors = parsed.collection_errors
        detail = f"{len(errors)} module(s) failed to import: " + ", ".join(errors)
        return TestRun("collection_error", detail=detail, **found, **base)
    if collect_only:
        return TestRun(
            "ok", detail=f"{len(stream.collected or ())} tests collected", **found, **base
        )
    return TestRun("ok", detail=f"{len(parsed.outcomes)} tests ran", **found, **base)


def env_or_failure(config: Config, spec: CommitSpec) -> Environment | TestRun:
    """The commit's environment, or the failed TestRun saying why it could not be built."""
    started = time.monotonic()
    try:
        return ensure_env(config, spec)
    except EnvironmentBroken as exc:
        return TestRun("env_failed", detail=str(exc), duration_s=time.monotonic() - started)
