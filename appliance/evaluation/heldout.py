"""Which commits evaluation may use and training never sees.

The split is by package: every usable commit of an `eval` package is an evaluation
commit. So that a corpus with a single package (the demo) can still be evaluated, the
newest commits of each *train* package name are held out as well (`Holdout`: the newest
ceil(`evaluation.holdout_fraction` × n) of its commits), always: campaigns skip those
commits and no dataset takes a row from them, whether or not eval packages exist. So no
commit trained on is newer than a held-out one of its package. Evaluation uses eval
packages when they have usable commits, else the held-out commits, and says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.config import Config
from appliance.harness.results import gold_for
from appliance.harness.spec import CommitSpec, package_specs
from appliance.packages import corpus
from appliance.packages.split import Holdout

__all__ = [
    "EVAL_PACKAGES",
    "HELD_OUT_COMMITS",
    "EvaluationSet",
    "evaluation_set",
]

EVAL_PACKAGES = "eval_packages"
HELD_OUT_COMMITS = "held_out_commits"


@dataclass(frozen=True)
class EvaluationSet:
    source: str  # EVAL_PACKAGES or HELD_OUT_COMMITS
    commits: tuple[CommitSpec, ...]
    note: str  # where the commits come from, for reports


def evaluation_set(config: Config, db) -> EvaluationSet:
    """The usable evaluation commits (gold-graded first when needed), in a stable order,
    at most `evaluation.max_examples` of them."""
    commits = _usable(config, db, lambda package, sha: package.split == "eval")
    if commits:
        note = "evaluated on eval-split packages, never trained on"
        return EvaluationSet(EVAL_PACKAGES, tuple(commits), note)
    holdout = Holdout.of(config, db)
    commits = _usable(
        config,
        db,
        lambda package, sha: package.split != "eval" and holdout.held_out(package.name, sha),
    )
    return EvaluationSet(HELD_OUT_COMMITS, tuple(commits), _held_out_note(holdout))


def _usable(
    config: Config, db, wanted: Callable[[corpus.RepoPackage, str], bool]
) -> list[CommitSpec]:
    """The wanted commits with a usable gold run, each sha once, by package and manifest
    order, at most `evaluation.max_examples`."""
    limit = config.settings.evaluation.max_examples
    found: list[CommitSpec] = []
    seen: set[tuple[str, str]] = set()
    for package in corpus.packages(db):
        for spec in package_specs(config, db, package):
            if (package.name, spec.sha) in seen or not wanted(package, spec.sha):
                continue
            seen.add((package.name, spec.sha))
            gold, _ = gold_for(config, db, spec)
            if gold.usable:
                found.append(spec)
            if len(found) >= limit:
                return found
    return found


def _held_out_note(holdout: Holdout) -> str:
    counts = {len(shas) for _, shas in holdout.packages}
    newest = (
        str(max(counts, default=0))
        if len(counts) <= 1
        else ", ".join(f"{name}: {len(shas)}" for name, shas in holdout.packages)
    )
    return (
        "no eval-split package has usable commits: evaluated on the held-out commits, the "
        f"newest {newest} commits of each train package (holdout_fraction "
        f"{holdout.fraction:g}), which training never sees"
    )
