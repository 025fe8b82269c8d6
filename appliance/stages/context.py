"""ContextPackage: what a stage's model sees of the repository, assembled within a budget.

The context comes only from the index of one snapshot (the task's parent commit), so no
stage can see anything from after it. Items are added in order of preference while they
fit the token budget (counted with the model's own tokenizer); each item says why it
was included, and the package is recorded with the triple it produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from appliance import index
from appliance.errors import IndexingError
from appliance.index.chunks import split_lines
from appliance.records import as_json

MAX_CANDIDATES = 8


@dataclass(frozen=True)
class ContextItem:
    kind: str  # tree | chunk | symbols | source
    path: str
    text: str
    why: str
    tokens: int

    def to_dict(self) -> dict:
        return as_json(self, "kind", "path", "why", "tokens", "text")


@dataclass(frozen=True)
class ContextPackage:
    stage: str
    sha: str  # the snapshot the context comes from: the task's parent commit
    snapshot_id: int
    budget: int
    items: tuple[ContextItem, ...]
    left_out: int  # items that did not fit the budget

    @property
    def tokens(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def paths(self) -> list[str]:
        return list(dict.fromkeys(item.path for item in self.items if item.path))

    def render(self) -> str:
        return "\n\n".join(item.text for item in self.items) or "(nothing found)"

    def to_dict(self) -> dict:
        return as_json(self, "stage", "sha", "budget", "tokens", "left_out", "items")


class ContextBuilder:
    """Builds each stage's ContextPackage from the index of one snapshot."""

    def __init__(
        self,
        db,
        snapshot: index.Snapshot,
        count_tokens: Callable[[str], int],
        embedder=None,
    ) -> None:
        self.db = db
        self.snapshot = snapshot
        self.count = count_tokens
        self.embedder = embedder
        self.files = {f.path: f for f in index.files(db, snapshot.id)}

    def _package(self, stage: str, budget: int, items: Iterable[tuple]) -> ContextPackage:
        chosen, used, left_out, seen = [], 0, 0, set()
        for kind, path, text, why in items:
            if (kind, path, text) in seen:
                continue
            seen.add((kind, path, text))
            tokens = self.count(text)
            if used + tokens > budget:
                left_out += 1
                continue
            chosen.append(ContextItem(kind, path, text, why, tokens))
            used += tokens
        return ContextPackage(
            stage, self.snapshot.sha, self.snapshot.id, budget, tuple(chosen), left_out
        )

    def text(self, path: str) -> str:
        """A file's text as indexed; "" for binary or very large files (never read)."""
        try:
            return index.file_text(self.db, self.snapshot.id, path)
        except IndexingError:
            return ""

    # --- candidates --------------------------------------------------------------------

    def candidates(self, task: str, hints: Sequence[str] = (), n: int = MAX_CANDIDATES):
        """Candidate files for a task, each with why: named by an earlier stage, similar by
        embedding, matching by full text, or an import neighbour of those."""
        found: dict[str, str] = {}
        for path in hints:
            if path in self.files:
                found.setdefault(path, "named by task analysis")
        for hit in index.similar(self.db, self.snapshot.id, task, k=n, embedder=self.embedder):
            found.setdefault(hit.path, f"similar to the task (score {hit.score:.2f})")
        for hit in index.fulltext(self.db, self.snapshot.id, task, k=n):
            found.setdefault(hit.path, "matches the task's words")
        for path in sorted(index.neighbours(self.db, self.snapshot.id, list(found))):
            found.setdefault(path, "imports or is imported by a candidate")
        return list(found.items())[: max(n, len(hints))]

    # --- per stage ---------------------------------------------------------------------

    def task_analysis(self, task: str, budget: int) -> ContextPackage:
        tree = "Files:\n" + "\n".join(sorted(self.files))
        items = [("tree", "", tree, "the repository's file list")]
        for hit in index.similar(self.db, self.snapshot.id, task, k=6, embedder=self.embedder):
            items.append(
                ("chunk", hit.path, _chunk_text(hit), f"similar to the task ({hit.score:.2f})")
            )
        for hit in index.fulltext(self.db, self.snapshot.id, task, k=4):
            items.append(("chunk", hit.path, _chunk_text(hit), "matches the task's words"))
        return self._package("task_analysis", budget, items)

    def scope(self, candidates: Sequence[tuple[str, str]], budget: int) -> ContextPackage:
        items = []
        for path, why in candidates:
            names = [s.signature for s in index.symbols(self.db, self.snapshot.id, [path])]
            summary = "\n".join(f"  {sig}" for sig in names[:25]) or "  (no Python symbols)"
            items.append(("symbols", path, f"{path}:\n{summary}", why))
        return self._package("scope", budget, items)

    def precision(
        self, paths: Sequence[str], budget: int, order: Callable[[list], list] | None = None
    ) -> tuple[ContextPackage, list[str]]:
        """The symbols of `paths` that fit, and their ids in the order shown; `order`
        rearranges the items before the budget is applied (evaluation: label-blind)."""
        items, ids = [], {}
        for symbol in index.symbols(self.db, self.snapshot.id, list(paths)):
            sid = f"{symbol.path}::{symbol.qualname}"
            doc = f"  — {symbol.docstring.splitlines()[0]}" if symbol.docstring else ""
            text = f"{sid}: {symbol.signature}{doc}"
            items.append(("symbols", symbol.path, text, "in scope"))
            ids[text] = sid
        package = self._package("precision", budget, order(items) if order else items)
        return package, [ids[item.text] for item in package.items]

    def source(
        self, stage: str, paths: Sequence[str], primary: Sequence[str], budget: int
    ) -> ContextPackage:
        """Source for the plan and code stages: the primary symbols first, then whole
        files in scope, while they fit."""
        items = []
        wanted = set(primary)
        for symbol in index.symbols(self.db, self.snapshot.id, list(paths)):
            if f"{symbol.path}::{symbol.qualname}" in wanted:
                lines = split_lines(self.text(symbol.path))
                body = "\n".join(lines[symbol.start - 1 : symbol.end])
                head = f"# {symbol.path}, lines {symbol.start}-{symbol.end}"
                items.append(("source", symbol.path, f"{head}\n{body}", "primary symbol"))
        for path in paths:
            text = self.text(path)
            if text:
                items.append(("source", path, f"# {path}\n{text}", "file in scope"))
        return self._package(stage, budget, items)


def _chunk_text(hit) -> str:
    return f"# {hit.path}, lines {hit.start}-{hit.end}\n{hit.text}"
