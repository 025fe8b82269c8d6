"""Python symbols from `ast`: functions, classes and methods, with their line spans,
signatures and the first paragraph of their docstrings.

A file that does not parse yields no symbols; the reason is returned, never raised.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass

SIGNATURE_CHARS = 400
DOCSTRING_CHARS = 300


@dataclass(frozen=True)
class Symbol:
    path: str
    name: str
    qualname: str  # dotted through enclosing classes and functions: "Outer.method.helper"
    kind: str  # "function" | "method" | "class"
    start: int  # first line, decorators included (1-based)
    end: int  # last line, inclusive
    signature: str  # "def name(a, b=1) -> int", "async def ...", "class Name(Base)"
    docstring: str  # the docstring's first paragraph, on one line; "" when none


def parse_python(source: str) -> tuple[ast.Module | None, str | None]:
    """(tree, None), or (None, why) when `source` is not valid Python."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            return ast.parse(source), None
    except SyntaxError as exc:
        return None, f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        return None, f"{type(exc).__name__}: {exc}"


def symbols_of(tree: ast.Module, path: str = "") -> list[Symbol]:
    """Every function, class and method of `tree`, nested ones included, in source order."""
    found: list[Symbol] = []
    _visit(tree, "", in_class=False, path=path, found=found)
    return found


def _visit(node: ast.AST, prefix: str, *, in_class: bool, path: str, found: list) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            qualname = f"{prefix}{child.name}"
            is_class = isinstance(child, ast.ClassDef)
            kind = "class" if is_class else ("method" if in_class else "function")
            start = min([child.lineno] + [d.lineno for d in child.decorator_list])
            found.append(
                Symbol(
                    path=path,
                    name=child.name,
                    qualname=qualname,
                    kind=kind,
                    start=start,
                    end=child.end_lineno or child.lineno,
                    signature=_signature(child),
                    docstring=_first_paragraph(ast.get_docstring(child)),
                )
            )
            _visit(child, f"{qualname}.", in_class=is_class, path=path, found=found)
        elif isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
            # Definitions inside if/try/with/for blocks; expressions cannot hold any.
            _visit(child, prefix, in_class=in_class, path=path, found=found)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    if isinstance(node, ast.ClassDef):
        bases = [ast.unparse(b) for b in node.bases] + [ast.unparse(k) for k in node.keywords]
        text = f"class {node.name}({', '.join(bases)})" if bases else f"class {node.name}"
    else:
        head = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        text = f"{head} {node.name}({ast.unparse(node.args)})"
        if node.returns is not None:
            text += f" -> {ast.unparse(node.returns)}"
    return text if len(text) <= SIGNATURE_CHARS else text[: SIGNATURE_CHARS - 1] + "…"


def _first_paragraph(docstring: str | None) -> str:
    if not docstring:
        return ""
    paragraph = docstring.strip().split("\n\n", 1)[0]
    text = " ".join(paragraph.split())
    return text if len(text) <= DOCSTRING_CHARS else text[: DOCSTRING_CHARS - 1] + "…"
