"""The one place that labels a list a prompt really shows, from the real commit.

A scope or precision target labels exactly the items the prompt listed, in the order it
listed them. The order never depends on the labels (`label_blind`: a shuffle seeded by
the task's key), and no item's `why` text tells which items the real commit changed: a
real file the retrieval missed is inserted with the same neutral text as the retrieved
ones, so neither position nor wording carries the answer.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")

CANDIDATE_WHY = "retrieved for the task"  # every candidate not found through imports
IMPORT_WHY = "imports or is imported by a candidate"  # the retrieval's own import neighbours


def task_key(package_name: str, sha: str) -> str:
    """The task's key, "name@sha": evaluation examples and dataset rows name tasks so."""
    return f"{package_name}@{sha}"


def label_blind(items: Sequence[T], key: str) -> list[T]:
    """`items` in a deterministic order seeded by `key` (e.g. "package@sha"), the same on
    every call and independent of any label."""
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def through_imports(why: str) -> bool:
    """Whether a retrieval `why` says the file was found as an import neighbour."""
    return "import" in why


def supporting_files(retrieved: Iterable[tuple[str, str]]) -> set[str]:
    """The files the retrieval found through imports: the "supporting" ones when not real."""
    return {path for path, why in retrieved if through_imports(why)}


def scope_candidates(
    retrieved: Sequence[tuple[str, str]], real_present: Sequence[str], key: str
) -> list[tuple[str, str]]:
    """The scope stage's candidate list: the retrieval's files plus every real file (present
    at the parent) it missed, each with a why that does not depend on the label, in a
    label-blind order."""
    found: dict[str, str] = {}
    for path, why in retrieved:
        found.setdefault(path, IMPORT_WHY if through_imports(why) else CANDIDATE_WHY)
    for path in real_present:
        found.setdefault(path, CANDIDATE_WHY)
    return label_blind(list(found.items()), key)


def scope_label(path: str, real: set[str], supporting: set[str]) -> str:
    if path in real:
        return "relevant"
    return "supporting" if path in supporting else "irrelevant"


def scope_target(real_files: Iterable[str], shown: Sequence[str], supporting: set[str]) -> dict:
    """Labels of exactly the `shown` paths, in the order shown: relevant if the commit
    changed it, supporting if the retrieval found it through imports, else irrelevant."""
    real = set(real_files)
    return {"files": [{"path": p, "label": scope_label(p, real, supporting)} for p in shown]}


def precision_label(symbol: str, primary: set[str], touched_files: set[str]) -> str:
    if symbol in primary:
        return "primary"
    return "supporting" if symbol.split("::", 1)[0] in touched_files else "excluded"


def precision_target(real_symbols: Iterable[str], shown: Sequence[str]) -> dict:
    """Labels of exactly the `shown` symbol ids, in the order shown: primary if the commit
    changed it, supporting if in the same file as a primary symbol, else excluded."""
    primary = set(real_symbols)
    touched = {s.split("::", 1)[0] for s in primary}
    return {
        "symbols": [{"symbol": s, "label": precision_label(s, primary, touched)} for s in shown]
    }
