"""What one blob's content yields for the index: its text, and for Python its symbols and
imports, and its chunks. Everything here depends on the content alone, never on the path
or the commit, which is why the results are stored once per blob."""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.index.chunks import (
    Chunk,
    chunk_lines,
    markdown_boundaries,
    python_boundaries,
    split_lines,
)
from appliance.index.imports import ImportStatement, import_statements
from appliance.index.symbols import Symbol, parse_python, symbols_of

MAX_BLOB_BYTES = 1 << 20  # larger files are listed, not read: generated or data, not code
BINARY_SNIFF = 8192  # a NUL byte among the first bytes marks a binary file, as git does


@dataclass(frozen=True)
class BlobAnalysis:
    blob: str
    size: int
    content_kind: str  # "text" | "binary" | "too_large"
    content: str | None  # the decoded text, when content_kind is "text"
    python: bool  # parsed as Python
    parse_error: str | None = None
    imports: list[ImportStatement] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)  # path left empty: a blob has none
    chunks: list[Chunk] = field(default_factory=list)


def decode(data: bytes) -> tuple[str, str | None]:
    """(content_kind, text): binary data has no text; undecodable bytes become U+FFFD."""
    if b"\0" in data[:BINARY_SNIFF]:
        return "binary", None
    return "text", data.decode("utf-8", errors="replace")


def analyse_blob(
    blob: str, size: int, data: bytes | None, *, python: bool, markdown: bool = False
) -> BlobAnalysis:
    """Analyse one blob; `data` is None for one too large to read (MAX_BLOB_BYTES)."""
    if data is None:
        return BlobAnalysis(blob, size, "too_large", None, python=False)
    kind, text = decode(data)
    if text is None:
        return BlobAnalysis(blob, size, kind, None, python=False)
    lines = split_lines(text)
    boundaries: list[int] = markdown_boundaries(lines) if markdown else []
    if not python:
        return BlobAnalysis(blob, size, kind, text, False, chunks=chunk_lines(lines, boundaries))
    parsed = analyse_python(text)
    if parsed.tree is not None:
        boundaries = python_boundaries(parsed.tree)
    return BlobAnalysis(
        blob,
        size,
        kind,
        text,
        python=True,
        parse_error=parsed.error,
        imports=parsed.imports,
        symbols=parsed.symbols,
        chunks=chunk_lines(lines, boundaries),
    )


@dataclass(frozen=True)
class PythonAnalysis:
    tree: object | None  # ast.Module
    error: str | None
    imports: list[ImportStatement]
    symbols: list[Symbol]


def analyse_python(text: str) -> PythonAnalysis:
    tree, error = parse_python(text)
    if tree is None:
        return PythonAnalysis(None, error, [], [])
    return PythonAnalysis(tree, None, import_statements(tree), symbols_of(tree))
