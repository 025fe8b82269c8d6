"""Which commits evaluation may use and training never sees.

The split is by package: every usable commit of an `eval` package is an evaluation
commit. So that a corpus with a single package (the demo) can still be evaluated, a
deterministic share of each *train* package's commits (`evaluation.holdout_fraction`,
by a hash of the sha) is held out as well, always: campaigns skip those commits and no
dataset takes a row from them, whether or not eval packages exist, so the held-out set
stays clean when the corpus changes. Evaluation uses eval packages when they have
usable commits, else the held-out commits, and says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Config
from appliance.harness.results import gold_for
from appliance.harness.spec import CommitSpec, package_specs
from appliance.packages import corpus
from appliance.packages.split import held_out

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

    @property
    def note(self) -> str:
        if self.source == EVAL_PACKAGES:
            return "evaluated on eval-split packages, never trained on"
        return (
            "no eval-split package has usable commits: evaluated on the held-out commits of "
            "the train packages, which training never sees"
        )


def evaluation_set(config: Config, db) -> EvaluationSet:
    """The usable evaluation commits (gold-graded first when needed), in a stable order,
    at most `evaluation.max_examples` of them."""
    limit = config.settings.evaluation.max_examples
    packages = corpus.packages(db)

    def usable(wanted) -> list[CommitSpec]:
        found = []
        for package in packages:
            for spec in package_specs(config, db, package):
                if not wanted(package.split, spec.sha):
                    continue
                gold, _ = gold_for(config, db, spec)
                if gold.usable:
                    found.append(spec)
                if len(found) >= limit:
                    return found
        return found

    commits = usable(lambda split, sha: split == "eval")
    if commits:
        return EvaluationSet(EVAL_PACKAGES, tuple(commits))
    fraction = config.settings.evaluation.holdout_fraction
    commits = usable(lambda split, sha: split != "eval" and held_out(sha, fraction))
    return EvaluationSet(HELD_OUT_COMMITS, tuple(commits))
