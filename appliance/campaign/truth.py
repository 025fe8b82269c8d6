"""What the real commit says: the files and symbols it changed, its diff as search/replace
edits, and the synthetic training pairs this implies for every stage.

Also the structural alignment of a model's plan and edits with the real commit.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass

from appliance.harness.edits import SearchReplace
from appliance.harness.spec import CommitSpec, is_test_path
from appliance.packages import gitsafe

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True)
class CommitTruth:
    files: tuple[str, ...]  # source files the commit changed (tests excluded)
    symbols: tuple[str, ...]  # "path::qualname" of functions/classes whose lines changed
    edits: tuple[SearchReplace, ...]  # the commit's source change as search/replace edits


def symbol_spans(source: str) -> list[tuple[str, int, int]]:
    """(qualname, first line, last line) of every function and class in `source`."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    spans = []

    def walk(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                spans.append((name, start, child.end_lineno or child.lineno))
                walk(child, name + ".")

    walk(tree, "")
    return spans


def _show(repo, sha: str, path: str) -> str | None:
    try:
        return gitsafe.git(["show", f"{sha}:{path}"], git_dir=repo).decode("utf-8", "replace")
    except gitsafe.GitError:
        return None


def _changed_lines(diff: str) -> tuple[set[int], set[int]]:
    """Old-side and new-side line numbers a unified diff (no context) touches."""
    old, new = set(), set()
    for line in diff.splitlines():
        match = _HUNK.match(line)
        if not match:
            continue
        o_start, o_len = int(match[1]), int(match[2] or 1)
        n_start, n_len = int(match[3]), int(match[4] or 1)
        old.update(range(o_start, o_start + o_len) if o_len else [o_start])
        new.update(range(n_start, n_start + n_len))
    return old, new


def _hunk_edits(path: str, before: str, after: str) -> list[SearchReplace]:
    """Search/replace edits turning `before` into `after`: one per changed region, widened
    with context lines until the search text is unique in `before`."""

    if not before:
        return [SearchReplace(path, "", after)]
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    edits = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        lo, hi, extra = i1, i2, 0
        while True:
            search = "".join(a[lo:hi])
            if search and before.count(search) == 1:
                break
            if lo == 0 and hi == len(a):
                break
            extra += 1
            lo, hi = max(0, i1 - extra), min(len(a), i2 + extra)
        replace = "".join(a[lo:i1] + b[j1:j2] + a[i2:hi])
        edits.append(SearchReplace(path, search, replace))
    return _merge_overlaps(path, before, edits)


def _merge_overlaps(path: str, before: str, edits: list[SearchReplace]) -> list[SearchReplace]:
    # Widened regions can overlap; then one edit over the whole file is exact and safe.
    spans = sorted((before.index(e.search), before.index(e.search) + len(e.search)) for e in edits)
    if any(spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)):
        return []
    return edits


def commit_truth(spec: CommitSpec) -> CommitTruth:
    names = gitsafe.git(
        ["diff", "--name-only", "--no-renames", "-z", spec.parent, spec.sha], git_dir=spec.repo
    ).decode("utf-8", "replace")
    files = tuple(sorted(p for p in names.split("\0") if p and not is_test_path(p)))
    symbols, edits = set(), []
    for path in files:
        before, after = _show(spec.repo, spec.parent, path), _show(spec.repo, spec.sha, path)
        diff = gitsafe.git(
            ["diff", "-U0", "--no-color", spec.parent, spec.sha, "--", path], git_dir=spec.repo
        ).decode("utf-8", "replace")
        old_lines, new_lines = _changed_lines(diff)
        for source, lines in ((before, old_lines), (after, new_lines)):
            for name, start, end in symbol_spans(source or "") if path.endswith(".py") else []:
                if any(start <= n <= end for n in lines):
                    symbols.add(f"{path}::{name}")
        if after is not None:
            pieces = _hunk_edits(path, before or "", after)
            edits.extend(pieces or [SearchReplace(path, before or "", after)])
    return CommitTruth(files, tuple(sorted(symbols)), tuple(edits))


def synthetic_pairs(
    spec: CommitSpec, truth: CommitTruth, candidates, symbol_ids, existing: set[str]
) -> dict:
    """The training pair the real commit implies for each stage: stage -> (input, target).
    `existing`: the files at the parent; a file the commit creates is no scope candidate."""
    task = spec.message
    real = set(truth.files)
    present = [p for p in truth.files if p in existing]
    candidate_paths = list(dict.fromkeys([*present, *(p for p, _ in candidates)]))
    primary = set(truth.symbols)
    touched_files = {s.split("::", 1)[0] for s in primary}
    return {
        "task_analysis": (
            {"task": task},
            {"summary": task.splitlines()[0], "kind": "feature", "files": list(truth.files)},
        ),
        "scope": (
            {"task": task, "candidates": candidate_paths},
            {
                "files": [
                    {
                        "path": p,
                        "label": "relevant"
                        if p in real
                        else "supporting"
                        if any(p == c and "import" in why for c, why in candidates)
                        else "irrelevant",
                    }
                    for p in candidate_paths
                ]
            },
        ),  # fmt: skip
        "precision": (
            {"task": task, "symbols": list(symbol_ids)},
            {
                "symbols": [
                    {
                        "symbol": s,
                        "label": "primary"
                        if s in primary
                        else "supporting"
                        if s.split("::", 1)[0] in touched_files
                        else "excluded",
                    }
                    for s in dict.fromkeys([*truth.symbols, *symbol_ids])
                ]
            },
        ),  # fmt: skip
        "plan": (
            {"task": task},
            {
                "parts": [{"id": 1, "title": task.splitlines()[0][:120], "depends_on": []}],
                "steps": [{"part": 1, "file": p, "action": f"change {p}"} for p in truth.files],
                "test_plan": [],
            },
        ),
        "code": (
            {"task": task, "files": list(truth.files)},
            {
                "edits": [
                    {"path": e.path, "search": e.search, "replace": e.replace} for e in truth.edits
                ]
            },
        ),
    }


def _overlap(predicted: set, real: set) -> dict:
    hit = len(predicted & real)
    return {
        "recall": hit / len(real) if real else None,
        "precision": hit / len(predicted) if predicted else None,
        "predicted": sorted(predicted),
    }


def alignment(truth: CommitTruth, plan: dict | None, edited_files, edited_symbols) -> dict:
    """How the model's plan and edits line up with the real commit, structurally."""
    plan_files = {s.get("file") for s in (plan or {}).get("steps", []) if isinstance(s, dict)} - {
        None
    }
    return {
        "plan_files": _overlap(plan_files, set(truth.files)),
        "edit_files": _overlap(set(edited_files), set(truth.files)),
        "edit_symbols": _overlap(set(edited_symbols), set(truth.symbols)),
        "real_files": list(truth.files),
        "real_symbols": list(truth.symbols),
    }


def symbols_of_diff(diff: str, files_before: dict[str, str]) -> set[str]:
    """Symbols (of the pre-edit files) whose lines a unified diff changes."""
    changed: set[str] = set()
    current = None
    for line in diff.splitlines():
        if line.startswith("--- a/"):
            current = line[6:]
            continue
        match = _HUNK.match(line)
        if match and current and current.endswith(".py"):
            start, length = int(match[1]), int(match[2] or 1)
            lines = range(start, start + max(length, 1))
            for name, s, e in symbol_spans(files_before.get(current, "")):
                if any(s <= n <= e for n in lines):
                    changed.add(f"{current}::{name}")
    return changed
