"""What the real commit says: the files and symbols it changed, its diff as search/replace
edits, its kind and plan, and the synthetic training pairs this implies for every stage.

Also the structural alignment of a model's plan and edits with the real commit.
"""

from __future__ import annotations

import ast
import difflib
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from appliance.campaign import targets
from appliance.harness.edits import SearchReplace
from appliance.harness.spec import CommitSpec, is_test_path
from appliance.packages import gitsafe

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
# Words of a commit's subject line that say what kind of change it is (matched as words;
# "fixed" only as the first word: "fixed precision" is no fix).
_BUGFIX = re.compile(
    r"\b(^fixed|fix(es|ing)?|bugs?|crash\w*|errors?|wrong\w*|regressions?|handl\w*|reject\w*"
    r"|avoid\w*|prevent\w*|validat\w*|preserv\w*)\b"
)
_REFACTOR = re.compile(
    r"\b(refactor\w*|extract\w*|split\w*|renam\w*|mov(e|es|ed|ing)|clean\w*|simplif\w*"
    r"|reorganiz\w*|inlin\w*)\b"
)
# Words of a message's body that describe a wrong behaviour the commit ends.
_BUG_STORY = re.compile(r"\b(instead of|bug|crash\w*|wrong\w*|regression|raised|lost|broke)\b")
_DOC_SUFFIXES = (".md", ".rst", ".txt")
MAX_PARTS, MAX_STEPS, MAX_TESTS = 4, 6, 4  # schemas.plan()'s caps


@dataclass(frozen=True)
class CommitTruth:
    files: tuple[str, ...]  # source files the commit changed (tests excluded)
    symbols: tuple[str, ...]  # "path::qualname" of functions/classes whose lines changed
    edits: tuple[SearchReplace, ...]  # the commit's source change as search/replace edits
    tests: tuple[str, ...] = ()  # the test files the commit changed
    # (symbol, "add" | "change" | "remove") by file, then line: what the plan's steps name
    changes: tuple[tuple[str, str], ...] = ()
    # (file, changed file it imports) at the commit, among `files`
    imports: tuple[tuple[str, str], ...] = ()


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
    return diff_truth(spec.repo, spec.parent, spec.sha)


def diff_truth(repo: Path, parent: str, sha: str) -> CommitTruth:
    """What commit `sha` of `repo` changed against `parent` (a commit, or an operator's
    corrected patch committed in a worktree)."""
    names = gitsafe.git(
        ["diff", "--name-only", "--no-renames", "-z", parent, sha], git_dir=repo
    ).decode("utf-8", "replace")
    changed = sorted(p for p in names.split("\0") if p)
    files = tuple(p for p in changed if not is_test_path(p))
    symbols, edits, changes, sources = set(), [], [], {}
    for path in files:
        before, after = _show(repo, parent, path), _show(repo, sha, path)
        sources[path] = after
        diff = gitsafe.git(
            ["diff", "-U0", "--no-color", parent, sha, "--", path], git_dir=repo
        ).decode("utf-8", "replace")
        touched = _touched_symbols(path, before, after, diff)
        symbols.update(f"{path}::{name}" for name, _ in touched)
        changes.extend((f"{path}::{name}", action) for name, action in _innermost(touched))
        if after is not None:
            pieces = _hunk_edits(path, before or "", after)
            edits.extend(pieces or [SearchReplace(path, before or "", after)])
    return CommitTruth(
        files,
        tuple(sorted(symbols)),
        tuple(edits),
        tests=tuple(p for p in changed if is_test_path(p)),
        changes=tuple(changes),
        imports=_imports_among(sources),
    )


def _touched_symbols(path: str, before, after, diff: str) -> list[tuple[str, str]]:
    """(qualname, action) of the symbols whose lines the diff changes, in line order (of
    the commit; removed ones after): "add" when absent at the parent, "remove" when absent
    at the commit, else "change"."""
    if not path.endswith(".py"):
        return []
    old_lines, new_lines = _changed_lines(diff)
    old = {name: (s, e) for name, s, e in symbol_spans(before or "")}
    new = {name: (s, e) for name, s, e in symbol_spans(after or "")}
    found: dict[str, str] = {}
    for name, (start, end) in new.items():
        if any(start <= n <= end for n in new_lines):
            found[name] = "change" if name in old else "add"
    for name, (start, end) in old.items():
        if any(start <= n <= end for n in old_lines) and name not in found:
            found[name] = "change" if name in new else "remove"
    return list(found.items())


def _innermost(touched: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What a plan's steps name: a changed class's changed methods rather than the class,
    an added class rather than its (added) methods."""
    actions = dict(touched)
    kept = []
    for name, action in touched:
        outer = [p for p in actions if name.startswith(p + ".")]
        if any(actions[p] == "add" for p in outer):
            continue  # the added class that holds it says it all
        inner = [c for c in actions if c.startswith(name + ".")]
        if action == "change" and inner:
            continue  # its changed members are the steps
        kept.append((name, action))
    return kept


def _imports_among(sources: dict[str, str | None]) -> tuple[tuple[str, str], ...]:
    """(importer, imported) pairs among the changed Python files, from their imports at
    the commit (absolute ones matched by path suffix, relative ones resolved)."""
    found = set()
    for path, source in sources.items():
        if not path.endswith(".py") or not source:
            continue
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for module in _imported_modules(path, tree):
            stem = module.replace(".", "/")
            for other in sources:
                if other != path and (
                    _is_module(other, stem) if module.startswith("/") else _ends_module(other, stem)
                ):
                    found.add((path, other))
    return tuple(sorted(found))


def _imported_modules(path: str, tree: ast.AST) -> list[str]:
    """Modules `path` imports, dotted; relative ones as "/dir/sub" paths from the root."""
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = posixpath.dirname(path)
                for _ in range(node.level - 1):
                    base = posixpath.dirname(base)
                root = "/" + posixpath.join(base, *(node.module or "").split(".")).strip("/")
                modules.append(root)
                modules.extend(f"{root}/{alias.name}" for alias in node.names)
            elif node.module:
                modules.append(node.module)
                modules.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _is_module(path: str, stem: str) -> bool:
    stem = stem.lstrip("/")
    return path in (f"{stem}.py", f"{stem}/__init__.py")


def _ends_module(path: str, stem: str) -> bool:
    return any(
        path == target or path.endswith("/" + target)
        for target in (f"{stem}.py", f"{stem}/__init__.py")
    )


def infer_kind(message: str, files, test_files) -> str:
    """The kind of change (schemas.task_analysis's enum) the commit is: "tests" when it
    changes only tests, "docs" when only docs; else from the subject line's words (a fix,
    a rejected input → "bugfix"; extract, split, rename → "refactor") or a body that tells
    of a wrong behaviour ("instead of", "raised", ...) → "bugfix"; else "feature"."""
    source = [p for p in files if not _is_doc(p)]
    if not source and test_files:
        return "tests"
    if files and not source and not test_files:
        return "docs"
    subject, _, body = message.strip().partition("\n")
    subject, body = subject.lower(), body.lower()
    if _BUGFIX.search(subject):
        return "bugfix"
    if _REFACTOR.search(subject):
        return "refactor"
    if _BUG_STORY.search(body):
        return "bugfix"
    return "feature"


def _is_doc(path: str) -> bool:
    return path.lower().endswith(_DOC_SUFFIXES) or path.startswith(("docs/", "doc/"))


def plan_order(truth: CommitTruth) -> list[str]:
    """The changed files (the test files when no other changed) in import order: a file
    another changed file imports comes first; ties, and cycles, by path."""
    files = sorted(truth.files or truth.tests)
    needs = {f: {b for a, b in truth.imports if a == f and b in files} for f in files}
    order: list[str] = []
    while len(order) < len(files):
        left = [f for f in files if f not in order]
        ready = [f for f in left if needs[f] <= set(order)]
        order.append((ready or left)[0])
    return order


def plan_target(task: str, truth: CommitTruth) -> dict:
    """The plan the commit implies (valid against schemas.plan()): a part per changed file
    in import order (the rest merged into the last), depending on the parts of the files
    it imports; steps that name the changed symbols; the changed test files to run."""
    order = plan_order(truth)
    part_of = {f: min(i, MAX_PARTS - 1) + 1 for i, f in enumerate(order)}
    parts = []
    for pid in sorted(set(part_of.values())):
        mine = [f for f in order if part_of[f] == pid]
        deps = {part_of[b] for a, b in truth.imports if a in mine and b in part_of} - {pid}
        parts.append(
            {"id": pid, "title": f"Change {', '.join(mine)}", "depends_on": sorted(deps)[:3]}
        )
    per_file = [[(f, a) for a in _step_actions(truth, f) or [f"change {f}"]] for f in order]
    steps = []
    for rank in range(max(map(len, per_file), default=0)):  # every file its first step first
        steps.extend(actions[rank] for actions in per_file if rank < len(actions))
    chosen = set(steps[:MAX_STEPS])
    steps = [  # back in file order
        {"part": part_of[f], "file": f, "action": action}
        for actions in per_file
        for f, action in actions
        if (f, action) in chosen
    ]
    test_plan = [f"run {t}" for t in truth.tests[:MAX_TESTS]]
    return {"parts": parts, "steps": steps, "test_plan": test_plan}


def _step_actions(truth: CommitTruth, path: str) -> list[str]:
    return [
        f"{action} {symbol.split('::', 1)[1]} in {path}"
        for symbol, action in truth.changes
        if symbol.split("::", 1)[0] == path
    ]


def synthetic_pairs(
    spec: CommitSpec, truth: CommitTruth, candidates, symbol_ids, existing: set[str]
) -> dict:
    """The training pair the real commit implies for each stage: stage -> (input, target).

    `candidates` ((path, why), as targets.scope_candidates lists them: label-blind, with
    the real files present at the parent) are labelled in their order; `existing`: the
    files at the parent (a file the commit creates is no scope candidate). The scope and
    precision inputs also keep the commit's facts (real files, the supporting files, real
    symbols), so a target can be built later for whatever list a prompt showed."""
    return task_pairs(spec.message, truth, candidates, symbol_ids, existing)


def task_pairs(task: str, truth: CommitTruth, candidates, symbol_ids, existing: set[str]) -> dict:
    """`synthetic_pairs` for a task given as text: what a change (a commit, or an
    operator's corrected patch) implies each stage should answer."""
    candidate_paths = list(dict.fromkeys(p for p, _ in candidates if p in existing))
    supporting = targets.supporting_files(candidates)
    return {
        "task_analysis": (
            {"task": task},
            {
                "summary": task.splitlines()[0],
                "kind": infer_kind(task, truth.files, truth.tests),
                "files": list(truth.files),
            },
        ),
        "scope": (
            {
                "task": task,
                "candidates": candidate_paths,
                "real_files": list(truth.files),
                "supporting": sorted(supporting),
            },
            targets.scope_target(truth.files, candidate_paths, supporting),
        ),  # fmt: skip
        "precision": (
            {"task": task, "symbols": list(symbol_ids), "real_symbols": list(truth.symbols)},
            targets.precision_target(truth.symbols, list(symbol_ids)),
        ),
        "plan": ({"task": task}, plan_target(task, truth)),
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
