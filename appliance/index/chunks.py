"""Text chunks of a file: windows of about WINDOW lines that cover every line.

A window that can end just before a top-level definition or a method (Python) or a
heading (Markdown) ends there, so the next chunk starts with the definition; otherwise windows
overlap by OVERLAP lines, so text cut at a window's edge is whole in the next one.
Chunks depend only on a file's content, so they are stored once per blob.
"""

from __future__ import annotations

import ast
import io
from collections.abc import Iterable
from dataclasses import dataclass

WINDOW = 40
OVERLAP = 8
MIN_ALIGNED = 20  # an aligned chunk still holds at least this many lines
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Chunk:
    seq: int  # 0, 1, ... within the blob
    start: int  # first line (1-based)
    end: int  # last line, inclusive
    text: str


def split_lines(text: str) -> list[str]:
    """Lines with their endings, split where Python's parser splits them (\\n, \\r\\n,
    \\r; not at form feeds), so line numbers agree with `ast`."""
    return io.StringIO(text, newline="").readlines()


def python_boundaries(tree: ast.Module) -> list[int]:
    """First lines (decorators included) of the top-level functions and classes and of
    the classes' own methods: an edit inside one leaves the chunks after it unchanged."""
    starts = []
    for node in tree.body:
        if isinstance(node, DEFINITIONS):
            starts.append(_first_line(node))
        if isinstance(node, ast.ClassDef):
            starts.extend(_first_line(n) for n in node.body if isinstance(n, DEFINITIONS))
    return starts


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def markdown_boundaries(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines, 1) if line.startswith("#")]


def chunk_lines(lines: list[str], boundaries: Iterable[int] = ()) -> list[Chunk]:
    """Chunks of `lines` (from `split_lines`); `boundaries` are lines a chunk may start at."""
    n = len(lines)
    starts = sorted({b for b in boundaries if 1 < b <= n})
    chunks: list[Chunk] = []
    start = 1
    while start <= n:
        limit = start + WINDOW - 1
        if limit >= n:
            end, following = n, n + 1
        else:
            aligned = [b for b in starts if start + MIN_ALIGNED <= b <= limit + 1]
            if aligned:
                end, following = aligned[-1] - 1, aligned[-1]
            else:
                end, following = limit, limit - OVERLAP + 1
        chunks.append(Chunk(len(chunks), start, end, "".join(lines[start - 1 : end])))
        start = following
    return chunks
