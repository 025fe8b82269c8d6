"""The train/eval split of repo packages: campaigns and datasets use train packages,
evaluation the eval ones, which must never have been trained on.

The split belongs to the package name, so every version of a repository is on the same
side: an earlier version's split, else the manifest's hint, else a hash of the name
(`eval` for about `evaluation.eval_fraction` of names). `forge package split` overrides.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from appliance.errors import ForgeError, UsageError
from appliance.store import transaction

SPLITS = ("train", "eval")


class SplitRefused(ForgeError):
    """A package cannot move to eval: rows made from it were trained on already."""


@dataclass(frozen=True)
class SplitChange:
    name: str
    split: str
    before: dict[str, str | None]  # version -> its split until now

    def to_dict(self) -> dict:
        return {"name": self.name, "split": self.split, "before": self.before}


def hashed_split(name: str, eval_fraction: float) -> str:
    """`eval` for about `eval_fraction` of names, decided by the name alone."""
    point = int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) / 2**64
    return "eval" if point < eval_fraction else "train"


def trained_rows(db, name: str) -> int:
    """Rows made from package `name` (any version) in any dataset version."""
    prefix = f"{name}@"  # dataset rows name their task package@commit
    return db.execute(
        "SELECT COUNT(*) FROM dataset_rows WHERE substr(task, 1, ?) = ?", [len(prefix), prefix]
    ).fetchone()[0]


def split_at_ingest(db, name: str, hint: str | None, eval_fraction: float):
    """(split, note) for a new version of package `name`; the note says why a hint was
    not followed (None when it was, or there was none)."""
    earlier = db.execute(
        "SELECT split FROM packages WHERE name = ? AND split IS NOT NULL ORDER BY id DESC LIMIT 1",
        [name],
    ).fetchone()
    if earlier is not None:
        split = earlier[0]
        if hint is not None and hint != split:
            return split, (
                f"the manifest's split hint {hint!r} was not followed: {name} is {split} "
                f"(its earlier versions); forge package split {name} {hint} moves every version"
            )
        return split, None
    split = hint or hashed_split(name, eval_fraction)
    if split == "eval" and trained_rows(db, name):
        return "train", f"{name} stays train: datasets already hold rows made from it"
    return split, None


def set_split(db, package: str, split: str) -> SplitChange:
    """Put every version of `package` (NAME or NAME-VERSION) in `split`."""
    from appliance.harness.spec import find_package

    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", "use train or eval")
    name = find_package(db, package)["name"]
    with transaction(db) as conn:
        before = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT version, split FROM packages WHERE name = ? ORDER BY id", [name]
            ).fetchall()
        }
        rows = trained_rows(conn, name) if split == "eval" else 0
        if rows:
            raise SplitRefused(
                f"{name} cannot move to eval: {rows} dataset row(s) were made from it, and "
                "eval packages must never have been trained on (the evaluation would measure "
                "what the adapters memorised)",
                f"keep {name} in train; hold out a repository no dataset has seen instead "
                "(forge package build SOURCE --split eval on the connected side, then ingest)",
            )
        conn.execute("UPDATE packages SET split = ? WHERE name = ?", [split, name])
    return SplitChange(name, split, before)
