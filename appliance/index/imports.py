"""The import graph between a snapshot's own Python files.

Import statements are read once per blob (`import_statements`) and resolved per
snapshot (`resolve_imports`), since what a name points to depends on the other files.
Absolute imports resolve through module names (package roots found from `__init__.py`,
the path from the repository root, and the path below a `src/` or `lib/` folder);
relative imports resolve through paths. Imports of anything outside the snapshot
(the standard library, dependencies) make no edge.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

SOURCE_ROOTS = ("src", "lib")
PYTHON_SUFFIXES = (".py", ".pyi")


@dataclass(frozen=True)
class ImportStatement:
    module: str  # "a.b" of `import a.b` / `from a.b import x`; "" for `from . import x`
    names: tuple[str, ...]  # what a from-import takes from the module; () for `import`
    level: int  # leading dots of a relative import; 0 when absolute


def import_statements(tree: ast.Module) -> list[ImportStatement]:
    """Every import in `tree`, including those inside functions and `if` blocks."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(ImportStatement(alias.name, (), 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            found.append(ImportStatement(node.module or "", names, node.level))
    return found


def to_json(statements: Iterable[ImportStatement]) -> str:
    return json.dumps([[s.module, list(s.names), s.level] for s in statements])


def from_json(text: str) -> list[ImportStatement]:
    return [ImportStatement(m, tuple(n), level) for m, n, level in json.loads(text)]


def module_names(paths: Iterable[str]) -> dict[str, str]:
    """Dotted module name → path, for the Python files among `paths`.

    Each file gets up to three names, tried in this order: from its package root (the
    topmost folder of an unbroken chain of `__init__.py` folders), from the repository
    root, and from below a leading `src/` or `lib/`. A name two files claim at the same
    rank is left out rather than guessed; `.py` wins over a `.pyi` stub of the same module.
    """
    python = sorted(
        (p for p in paths if p.endswith(PYTHON_SUFFIXES)), key=lambda p: (p.endswith(".pyi"), p)
    )
    packages = {str(PurePosixPath(p).parent) for p in python if _stem(p) == "__init__"}
    ranks: list[dict[str, set[str]]] = [{}, {}, {}]
    for path in python:
        for rank, name in enumerate(_names(path, packages)):
            if name:
                ranks[rank].setdefault(name, set()).add(path)
    result: dict[str, str] = {}
    for claims in ranks:
        for name, owners in claims.items():
            if name in result:
                continue
            py = sorted(o for o in owners if o.endswith(".py"))
            chosen = py or sorted(owners)
            if len(chosen) == 1:
                result[name] = chosen[0]
    return result


def resolve_imports(
    statements: Mapping[str, list[ImportStatement]], paths: Iterable[str]
) -> set[tuple[str, str]]:
    """(importer, imported) path pairs for imports between files of the snapshot."""
    all_paths = set(paths)
    names = module_names(all_paths)
    edges = set()
    for importer, found in statements.items():
        for statement in found:
            if statement.level:
                targets = _relative(importer, statement, all_paths)
            else:
                targets = _absolute(statement, names)
            edges.update((importer, t) for t in targets if t != importer)
    return edges


def _stem(path: str) -> str:
    return PurePosixPath(path).stem


def _names(path: str, packages: set[str]) -> tuple[str, str, str]:
    p = PurePosixPath(path)
    parts = list(p.parent.parts) + ([] if p.stem == "__init__" else [p.stem])
    # Package root: climb while the folder holds an __init__.py.
    depth = 0
    folder = p.parent
    while str(folder) in packages and str(folder) != ".":
        depth += 1
        folder = folder.parent
    own = parts[len(p.parent.parts) - depth :]
    from_root = parts
    below_source = parts[1:] if parts and parts[0] in SOURCE_ROOTS else []
    ranked = (own, from_root, below_source)
    return tuple(".".join(x) if all(s.isidentifier() for s in x) else "" for x in ranked)


def _absolute(statement: ImportStatement, names: Mapping[str, str]) -> list[str]:
    targets = []
    for name in statement.names:
        if name != "*" and f"{statement.module}.{name}" in names:
            targets.append(names[f"{statement.module}.{name}"])  # a submodule
    if len(targets) < len(statement.names) or not statement.names:
        parts = statement.module.split(".")
        for end in range(len(parts), 0, -1):  # `import a.b.c` also binds a and a.b
            found = names.get(".".join(parts[:end]))
            if found:
                targets.append(found)
                break
    return targets


def _relative(importer: str, statement: ImportStatement, paths: set[str]) -> list[str]:
    base = PurePosixPath(importer).parent
    for _ in range(statement.level - 1):
        if str(base) == ".":
            return []  # climbs above the repository root
        base = base.parent
    if statement.module:
        base = base.joinpath(*statement.module.split("."))
    targets = []
    for name in statement.names:
        if name != "*" and (found := _module_file(base / name, paths)):
            targets.append(found)
    if len(targets) < len(statement.names):
        found = _module_file(base, paths) if statement.module else _package_file(base, paths)
        if found:
            targets.append(found)
    return targets


def _module_file(base: PurePosixPath, paths: set[str]) -> str | None:
    for candidate in (f"{base}.py", f"{base}.pyi"):
        if candidate in paths:
            return candidate
    return _package_file(base, paths)


def _package_file(base: PurePosixPath, paths: set[str]) -> str | None:
    for name in ("__init__.py", "__init__.pyi"):
        candidate = str(base / name) if str(base) != "." else name
        if candidate in paths:
            return candidate
    return None
