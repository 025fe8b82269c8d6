"""Whether a solve run's rows may be trained on: the leak rule for operator feedback.

A package's newest commits are held out for evaluation (`packages.split.Holdout`). A run
whose snapshot is a held-out commit or descends from one showed the model that commit's
solution in its context, so its rows must not enter a dataset while the commit is held
out; nor may anything of an eval package. The commits a snapshot contains are those
recorded with the run (the package's history then) and, for commits ingested since,
those git finds to be its ancestors in the package's corpus repositories.
"""

from __future__ import annotations

import sqlite_utils

from appliance.config import Config
from appliance.packages import corpus
from appliance.packages.split import Holdout
from appliance.solve.runs import SolveRun
from appliance.solve.source import corpus_repo, is_ancestor


def held_out_in_snapshot(
    config: Config, db: sqlite_utils.Database, run: SolveRun, holdout: Holdout
) -> tuple[str, ...]:
    """The held-out commits of the run's package that its snapshot contains."""
    package = corpus.package_by_id(db, run.package_id)
    if package is None:
        return ()
    held = dict(holdout.packages).get(package.name, ())
    found = set(held) & set(run.contains)
    for version in (p for p in corpus.packages(db) if p.name == package.name):
        repo = corpus_repo(config, version)
        found |= {sha for sha in held if sha not in found
                  and is_ancestor(repo, sha, run.snapshot_sha)}  # fmt: skip
    return tuple(sha for sha in held if sha in found)


def untrainable_reason(
    config: Config, db: sqlite_utils.Database, run: SolveRun, holdout: Holdout
) -> str | None:
    """Why the run's rows may not enter a dataset now; None when they may."""
    package = corpus.package_by_id(db, run.package_id)
    if package is None:
        return "its package is no longer in the corpus"
    if package.split == "eval":
        return f"{package.name} is an eval package: nothing of it is ever trained on"
    held = held_out_in_snapshot(config, db, run, holdout)
    if held:
        return (
            f"its snapshot {run.snapshot_sha[:12]} contains {len(held)} commit(s) of "
            f"{package.name} held out for evaluation ({', '.join(s[:12] for s in held[:3])}"
            f"{', …' if len(held) > 3 else ''}): the model saw their solutions in its context"
        )
    return None
