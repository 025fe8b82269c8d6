"""`forge feedback RUN good|bad [--patch FILE]`: the operator's word on a solve run.

A corrected patch is checked first: it must apply cleanly to the run's snapshot (in a
worktree of it), else nothing is stored. What it changes is read the way a real commit
is (`campaign.truth`), and what that implies for each stage is stored with the run, so
that `forge datasets build` can label exactly what each of the run's prompts showed
(appliance.datasets.operator makes the rows). Feedback on a run whose rows may not be
trained on now (its snapshot holds a held-out commit, or an eval package) is stored all
the same, with the reason: the rows wait until the commit is no longer held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from appliance.campaign import truth
from appliance.config import Config
from appliance.errors import ForgeError
from appliance.harness.checkout import worktree
from appliance.harness.edits import EditNotApplied, apply_edits, diff_of, load_edits
from appliance.packages import gitsafe
from appliance.packages.split import Holdout
from appliance.records import as_json
from appliance.solve import leak, runs, source
from appliance.solve.runs import SolveRun

_IDENT = ["-c", "user.name=Forge", "-c", "user.email=forge@localhost"]


class FeedbackRefused(ForgeError):
    """Feedback that cannot be stored as given (a corrected patch that does not apply to
    the run's snapshot, a good verdict on a run without a diff); nothing is stored."""


@dataclass(frozen=True)
class FeedbackResult:
    run: SolveRun
    held_back: str | None  # why its rows may not enter a dataset now; None: they may

    def to_dict(self) -> dict:
        return as_json(self)


def give_feedback(
    config: Config,
    db: sqlite_utils.Database,
    run_id: int,
    verdict: str,
    patch_file: Path | None = None,
) -> FeedbackResult:
    """Store the operator's verdict on run `run_id` (and the corrected patch's targets)."""
    run = runs.get(db, run_id)
    if verdict == "good" and patch_file is None and run.outcome != "diff":
        raise FeedbackRefused(
            f"run {run.id} produced no diff ({run.reason}): there is no answer to call good",
            f"give the change it should have made: forge feedback {run.id} bad --patch FILE",
        )
    patch = targets = None
    if patch_file is not None:
        patch, targets = corrected(config, db, run, patch_file)
    held_back = leak.untrainable_reason(config, db, run, Holdout.of(config, db))
    stored = runs.record_feedback(db, run.id, verdict, patch, targets)
    return FeedbackResult(stored, held_back)


def corrected(
    config: Config, db: sqlite_utils.Database, run: SolveRun, patch_file: Path
) -> tuple[str, dict]:
    """(the corrected patch as a unified diff, stage -> {"input", "target"} it implies)."""
    refused = f"the patch {patch_file} was refused and nothing was stored"
    try:
        kind, payload = load_edits(patch_file)
    except EditNotApplied as exc:
        raise FeedbackRefused(
            f"{exc.message}; {refused}",
            "give a unified diff (git diff) or a JSON list of {path, search, replace} edits",
        ) from exc
    git_dir = source.run_git_dir(config, db, run.package_id, run.repo_path, run.snapshot_sha)
    with worktree(config, git_dir, run.snapshot_sha, label=f"feedback-{run.id}") as work:
        repo = work / "repo"
        try:
            apply_edits(repo, kind, payload)
        except EditNotApplied as exc:
            raise FeedbackRefused(
                f"the patch does not apply cleanly to run {run.id}'s snapshot "
                f"{run.snapshot_sha[:12]}: {exc.message}; {refused}",
                f"make it against that commit (git diff {run.snapshot_sha[:12]})",
            ) from exc
        diff = diff_of(repo)
        if not diff.strip():
            raise FeedbackRefused(f"the patch changes nothing; {refused}")
        parent, commit = _commit(repo)
        real = truth.diff_truth(repo / ".git", parent, commit)
        existing = set(_files(repo, parent))
    pairs = truth.task_pairs(run.task, real, _shown_files(run), _shown_symbols(run), existing)
    return diff, {
        stage: {"input": given, "target": target} for stage, (given, target) in pairs.items()
    }


def _commit(repo: Path) -> tuple[str, str]:
    """(the worktree's snapshot commit, a new commit of its tree as the patch left it)."""
    parent = gitsafe.git(["rev-parse", "HEAD"], cwd=repo).decode().strip()
    gitsafe.git(["add", "-A"], cwd=repo)
    tree = gitsafe.git(["write-tree"], cwd=repo).decode().strip()
    message = b"the operator's corrected patch\n"
    commit = gitsafe.git([*_IDENT, "commit-tree", tree, "-p", parent], cwd=repo, input=message)
    return parent, commit.decode().strip()


def _files(repo: Path, sha: str) -> list[str]:
    out = gitsafe.git(["ls-tree", "-r", "-z", "--name-only", "--full-tree", sha], cwd=repo)
    return [p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def _shown_files(run: SolveRun) -> list[tuple[str, str]]:
    """(path, why) of the files the run's scope prompt listed, in its order."""
    scope = run.stage("scope")
    items = scope.context.get("items", []) if scope else []
    return [(i["path"], i.get("why", "")) for i in items if isinstance(i, dict) and i.get("path")]


def _shown_symbols(run: SolveRun) -> list[str]:
    """The symbol ids the run's precision prompt listed ("path::qualname: signature")."""
    precision = run.stage("precision")
    items = precision.context.get("items", []) if precision else []
    return [i.get("text", "").split(": ", 1)[0] for i in items if isinstance(i, dict)]
