"""`forge solve --test`: the package's tests on the snapshot without the diff, then with it,
each in a fresh worktree, in the sandbox and the package's environment, through the one
runner every grading uses (`harness.testrun.run_tests`).

An operator's task has no commit to grade against, so no FAIL_TO_PASS: the diff passes
when no test that passed without it fails with it (a regression check), and the outcome
lists what it broke, what newly passes, and what still fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import Config
from appliance.harness.checkout import CheckoutError, worktree
from appliance.harness.edits import EditNotApplied, apply_edits
from appliance.harness.grading import INFRA, infrastructure_flags
from appliance.harness.spec import CommitSpec
from appliance.harness.testrun import TestRun, env_or_failure, run_tests
from appliance.records import as_json

VERDICTS = ("passed", "failed", "not_applied", "tampered", "infra")
SHOWN = 20  # tests listed per kind in an outcome


@dataclass(frozen=True)
class TestOutcome:
    verdict: str  # one of VERDICTS
    reason: str
    broken: tuple[str, ...] = ()  # passed without the diff, do not with it
    newly_passing: tuple[str, ...] = ()  # pass with the diff, did not (or did not exist)
    failing: tuple[str, ...] = ()  # fail with the diff (modules that do not import included)
    flags: tuple[str, ...] = ()  # test infrastructure the diff edits (grading's flags)
    before: dict | None = None  # TestRun.summary() without the diff
    after: dict | None = None  # and with it

    __test__ = False  # not a pytest test class

    def to_dict(self) -> dict:
        return as_json(
            self,
            broken=self.broken[:SHOWN],
            newly_passing=self.newly_passing[:SHOWN],
            failing=self.failing[:SHOWN],
            counts={
                "broken": len(self.broken),
                "newly_passing": len(self.newly_passing),
                "failing": len(self.failing),
            },
        )


def test_patch(
    config: Config, spec: CommitSpec, patch: str, on_progress: Callable[[str], None] | None = None
) -> TestOutcome:
    """Run the tests of `spec`'s snapshot without and with `patch` (a unified diff)."""
    say = on_progress or (lambda text: None)
    env = env_or_failure(config, spec)
    if isinstance(env, TestRun):
        return TestOutcome("infra", f"{env.status}: {env.detail}", after=env.summary())
    label = f"solve-{spec.sha[:12]}"
    try:
        say("tests without the diff")
        with worktree(config, spec.repo, spec.sha, label=f"{label}-before") as work:
            before = run_tests(config, spec, work, env)
        say("tests with the diff")
        with worktree(config, spec.repo, spec.sha, label=f"{label}-diff") as work:
            repo = work / "repo"
            try:
                changed = apply_edits(repo, "diff", patch)
            except EditNotApplied as exc:
                return TestOutcome("not_applied", exc.message, before=before.summary())
            flags = infrastructure_flags(spec, repo, changed)
            after = run_tests(config, spec, work, env)
    except CheckoutError as exc:
        return TestOutcome("infra", f"the snapshot cannot be checked out: {exc.message}")
    return classify(before, after, flags)


def classify(before: TestRun, after: TestRun, flags: tuple[str, ...] = ()) -> TestOutcome:
    """The outcome of the run with the diff (`after`) against the run without (`before`)."""
    runs = {"before": before.summary(), "after": after.summary(), "flags": flags}
    for run, side in ((before, "without"), (after, "with")):
        if run.status in INFRA:
            return TestOutcome("infra", f"the run {side} the diff: {run.status}: {run.detail}",
                               **runs)  # fmt: skip
    if after.status == "tampered":
        return TestOutcome("tampered", f"the run's results were tampered with: {after.detail}",
                           **runs)  # fmt: skip
    if after.status == "build_failed" and before.status == "build_failed":
        return TestOutcome("infra", f"the snapshot itself does not build: {before.detail}", **runs)
    if after.status == "build_failed":
        return TestOutcome("failed", f"the project does not build with the diff: {after.detail}",
                           **runs)  # fmt: skip
    if not after.ran:
        return TestOutcome("failed", f"the tests did not finish: {after.detail}", **runs)
    passed_before = (
        {t for t, o in before.outcomes.items() if o == "passed"} if before.ran else set()
    )
    passed_after = {t for t, o in after.outcomes.items() if o == "passed"}
    broken = tuple(sorted(passed_before - passed_after))
    newly = tuple(sorted(passed_after - passed_before))
    failing = tuple(
        sorted({t for t, o in after.outcomes.items() if o in ("failed", "error")}
               | set(after.collection_errors))
    )  # fmt: skip
    found = {"broken": broken, "newly_passing": newly, "failing": failing, **runs}
    if broken:
        return TestOutcome(
            "failed",
            f"{len(broken)} test(s) that pass without the diff do not with it ({broken[0]})",
            **found,
        )
    reason = f"no test that passes without the diff fails with it ({len(passed_after)} pass"
    reason += f", {len(newly)} newly" if newly else ""
    reason += f"; {len(failing)} fail, none of which passed without it)" if failing else ")"
    return TestOutcome("passed", reason, **found)
