"""House rules of the source tree that a reader cannot see from one file alone.

No function or method in appliance/, daemon/ or tui/ is longer than MAX_LINES, counted from
its first decorator to its last line (docstring included): a long function is split into
steps that read top to bottom. LONG_TODAY lists the functions that were longer when this
rule came in, each with its length then; it may only shrink. An entry that grows fails,
and so does one that got short enough (or is gone): then it leaves the list.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("appliance", "daemon", "tui")
MAX_LINES = 80

# "path::Class.function": its length in lines when it was listed. Shorten, never add.
LONG_TODAY: dict[str, int] = {}


def _functions(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
    """(qualified name, lines) of every function under `node`, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
            name = f"{prefix}{child.name}"
            yield name, child.end_lineno - first + 1
            yield from _functions(child, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


@functools.cache  # parsed once for both tests
def function_lengths() -> tuple[tuple[str, int], ...]:
    """("path::qualified name", lines) of every function in the packages, in path order."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            where = path.relative_to(ROOT).as_posix()
            found += [(f"{where}::{name}", lines) for name, lines in _functions(tree, "")]
    return tuple(found)


def test_lengths_are_measured_from_the_decorator_to_the_last_line(tmp_path):
    source = '@a\n@b(\n    1,\n)\ndef f():\n    """doc."""\n\n    def g():\n        pass\n'
    source += "\n\nclass C:\n    @property\n    def p(self):\n        return 1\n"
    assert list(_functions(ast.parse(source), "")) == [("f", 9), ("f.g", 2), ("C.p", 3)]


def test_no_function_is_longer_than_the_limit():
    too_long = [
        f"{name}: {lines} lines"
        for name, lines in function_lengths()
        if lines > MAX_LINES and lines > LONG_TODAY.get(name, MAX_LINES)
    ]
    assert not too_long, (
        f"longer than {MAX_LINES} lines (or than when listed in LONG_TODAY); split into steps "
        "that read top to bottom:\n" + "\n".join(too_long)
    )


def test_the_list_of_long_functions_only_shrinks():
    lengths: dict[str, int] = {}
    for name, lines in function_lengths():
        lengths[name] = max(lines, lengths.get(name, 0))
    stale = [
        f"{name}: {'gone' if name not in lengths else f'{lengths[name]} lines'}"
        for name in LONG_TODAY
        if lengths.get(name, 0) <= MAX_LINES
    ]
    assert not stale, (
        f"now {MAX_LINES} lines or fewer, or gone: remove from LONG_TODAY:\n" + "\n".join(stale)
    )
