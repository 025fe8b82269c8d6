"""The train/eval split of repo packages, and the commits held out of training:
campaigns and datasets use train packages, evaluation the eval ones, which must never
have been trained on.

The split belongs to the package name, so every version of a repository is on the same
side: an earlier version's split, else the manifest's hint, else a hash of the name
(`eval` for about `evaluation.eval_fraction` of names). `forge package split` overrides.

So that a corpus with a single package (the demo) can still be evaluated, the newest
commits of each *train* package name are held out as well, always (`Holdout`): of the
name's commits (every version's together, by author date, then ingest and manifest
order) the newest ceil(`evaluation.holdout_fraction` × n). Campaigns skip them and no
dataset takes a row from them, so no commit trained on is newer than a held-out commit
of its package, and no held-out solution sits in a training commit's parent tree.

Whether rows were trained on is the datasets' to say: the callers hand in
`trained_rows(name)`, how many dataset rows were made from package `name`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

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


HOLDOUT_RULE = "newest"


@dataclass(frozen=True)
class Holdout:
    """The commits held out of training: per train package name, its newest ones."""

    fraction: float
    packages: tuple[tuple[str, tuple[str, ...]], ...]  # (name, held-out shas), by name
    rule: str = HOLDOUT_RULE

    @classmethod
    def of(cls, config: Config, db: corpus.Connection) -> Holdout:
        """The hold-out of the corpus as it is now, at `evaluation.holdout_fraction`."""
        fraction = config.settings.evaluation.holdout_fraction
        packages = corpus.packages(db)
        train = {p.name for p in packages if p.split != "eval"}
        return cls.cut(fraction, {name: _history(db, packages, name) for name in train})

    @classmethod
    def cut(cls, fraction: float, histories: dict[str, list[str]]) -> Holdout:
        """The newest ceil(fraction × n) of each name's shas (listed oldest first)."""
        held = []
        for name in sorted(histories):
            shas = histories[name]
            count = math.ceil(round(fraction * len(shas), 9)) if fraction > 0 else 0
            held.append((name, tuple(shas[len(shas) - count :])))
        return cls(fraction, tuple(held))

    @functools.cached_property  # the records never change; asked once per row
    def _held(self) -> dict[str, frozenset[str]]:
        return {name: frozenset(shas) for name, shas in self.packages}

    def held_out(self, package_name: str, sha: str) -> bool:
        """Whether this commit of a package name is kept out of training."""
        return sha in self._held.get(package_name, frozenset())

    def trainable(self, package_name: str, split: str | None, sha: str) -> bool:
        """May rows from this commit reach a campaign or a dataset?"""
        return split != "eval" and not self.held_out(package_name, sha)

    def to_dict(self) -> dict:
        return as_json(self, "rule", "fraction", "packages", packages=dict(self.packages))

    @property
    def digest(self) -> str:
        """sha256 of `to_dict` (sorted keys): equal digests, the same commits held out."""
        data = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()


def history(db: corpus.Connection, name: str) -> list[str]:
    """Every commit of package `name` (all its versions, each sha once), oldest first:
    by author date, then the order the versions were ingested and the manifest's order.
    A commit without a readable date counts as the oldest."""
    return _history(db, corpus.packages(db), name)


def _history(db: corpus.Connection, packages: list[corpus.RepoPackage], name: str) -> list[str]:
    seen: dict[str, tuple] = {}
    versions = [p for p in packages if p.name == name]
    for package in sorted(versions, key=lambda p: p.id):
        for commit in corpus.commits_of(db, package.id):
            if commit.sha not in seen:
                seen[commit.sha] = (_when(commit.author_date), package.id, commit.id)
    return sorted(seen, key=seen.__getitem__)


def _when(author_date: str) -> datetime:
    try:
        when = datetime.fromisoformat(author_date)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)
