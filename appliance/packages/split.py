"""The train/eval split of repo packages, and the commits held out of training:
campaigns and datasets use train packages, evaluation the eval ones, which must never
have been trained on.

The split belongs to the package name, so every version of a repository is on the same
side: an earlier version's split, else the manifest's hint, else a hash of the name
(`eval` for about `evaluation.eval_fraction` of names). `forge package split` overrides.

So that a corpus with a single package (the demo) can still be evaluated, a
deterministic share of each *train* package's commits (`evaluation.holdout_fraction`,
by a hash of the sha) is held out as well, always: campaigns skip those commits and no
dataset takes a row from them (`trainable`).

Whether rows were trained on is the datasets' to say: the callers hand in
`trained_rows(name)`, how many dataset rows were made from package `name`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from appliance.config import Config
from appliance.errors import ForgeError, UsageError
from appliance.packages import corpus
from appliance.records import as_json
from appliance.store import transaction

SPLITS = ("train", "eval")

TrainedRows = Callable[[str], int]  # package name → dataset rows made from it


def no_rows(name: str) -> int:
    """The `trained_rows` of a caller that has no datasets to ask (tests, benchmarks)."""
    return 0


class SplitRefused(ForgeError):
    """A package cannot move to eval: rows made from it were trained on already."""


@dataclass(frozen=True)
class SplitChange:
    name: str
    split: str
    before: tuple[tuple[str, str | None], ...]  # (version, its split until now)

    def to_dict(self) -> dict:
        return as_json(self, before=dict(self.before))


def hashed_split(name: str, eval_fraction: float) -> str:
    """`eval` for about `eval_fraction` of names, decided by the name alone."""
    point = int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) / 2**64
    return "eval" if point < eval_fraction else "train"


def split_at_ingest(
    db: corpus.Connection,
    name: str,
    hint: str | None,
    eval_fraction: float,
    trained_rows: TrainedRows,
) -> tuple[str, str | None]:
    """(split, note) for a new version of package `name`; the note says why a hint was
    not followed (None when it was, or there was none)."""
    earlier = corpus.newest_split(db, name)
    if earlier is not None:
        if hint is not None and hint != earlier:
            return earlier, (
                f"the manifest's split hint {hint!r} was not followed: {name} is {earlier} "
                f"(its earlier versions); forge package split {name} {hint} moves every version"
            )
        return earlier, None
    split = hint or hashed_split(name, eval_fraction)
    if split == "eval" and trained_rows(name):
        return "train", f"{name} stays train: datasets already hold rows made from it"
    return split, None


def set_split(
    db: sqlite_utils.Database, package: str, split: str, trained_rows: TrainedRows
) -> SplitChange:
    """Put every version of `package` (NAME or NAME-VERSION) in `split`."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", "use train or eval")
    name = corpus.find_package(db, package).name
    with transaction(db) as conn:
        before = corpus.version_splits(conn, name)
        rows = trained_rows(name) if split == "eval" else 0
        if rows:
            raise SplitRefused(
                f"{name} cannot move to eval: {rows} dataset row(s) were made from it, and "
                "eval packages must never have been trained on (the evaluation would measure "
                "what the adapters memorised)",
                f"keep {name} in train; hold out a repository no dataset has seen instead "
                "(forge package build SOURCE --split eval on the connected side, then ingest)",
            )
        corpus.set_name_split(conn, name, split)
    return SplitChange(name, split, before)


def held_out(sha: str, fraction: float) -> bool:
    """Whether a train package's commit is kept out of training (stable for a sha)."""
    if fraction <= 0:
        return False
    digest = int(hashlib.sha256(f"forge-holdout:{sha}".encode()).hexdigest()[:8], 16)
    return digest < fraction * 2**32


def trainable(config: Config, split: str | None, sha: str) -> bool:
    """May rows from this commit reach a campaign or a dataset?"""
    if split == "eval":
        return False
    return not held_out(sha, config.settings.evaluation.holdout_fraction)
