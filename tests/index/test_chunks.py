"""Chunking: windows that cover every line, aligned to definitions where they can be."""

from __future__ import annotations

import ast

from appliance.index.chunks import (
    OVERLAP,
    WINDOW,
    chunk_lines,
    markdown_boundaries,
    python_boundaries,
    split_lines,
)
from tests.index.conftest import LONG


def _covered(chunks) -> set[int]:
    return {line for c in chunks for line in range(c.start, c.end + 1)}


def test_plain_windows_overlap_and_cover_every_line():
    lines = [f"line {i}\n" for i in range(1, 101)]
    chunks = chunk_lines(lines)
    assert _covered(chunks) == set(range(1, 101))
    assert chunks[0].start == 1 and chunks[0].end == WINDOW
    assert chunks[1].start == WINDOW - OVERLAP + 1
    assert chunks[-1].end == 100
    for chunk in chunks:
        assert chunk.text == "".join(lines[chunk.start - 1 : chunk.end])
    assert [c.seq for c in chunks] == list(range(len(chunks)))


def test_python_chunks_start_at_top_level_definitions():
    lines = split_lines(LONG)
    chunks = chunk_lines(lines, python_boundaries(ast.parse(LONG)))
    assert _covered(chunks) == set(range(1, len(lines) + 1))
    for chunk in chunks:
        assert chunk.text.startswith("def f")
        assert chunk.end - chunk.start + 1 <= WINDOW
    assert all(b.start == a.end + 1 for a, b in zip(chunks, chunks[1:], strict=False))


def test_markdown_headings_and_small_and_empty_files():
    text = "# A\n" + "text\n" * 30 + "## B\n" + "more\n" * 30
    lines = split_lines(text)
    chunks = chunk_lines(lines, markdown_boundaries(lines))
    assert chunks[1].text.startswith("## B")
    assert _covered(chunks) == set(range(1, len(lines) + 1))
    assert chunk_lines(split_lines("one line, no newline")) == [
        chunk_lines(["one line, no newline"])[0]
    ]
    assert chunk_lines(split_lines("")) == []


def test_lines_split_as_python_counts_them():
    assert split_lines("a\r\nb\rc\x0cd\ne") == ["a\r\n", "b\r", "c\x0cd\n", "e"]


def test_methods_of_a_class_are_boundaries_too():
    source = "class Big:\n" + "".join(
        f"    def m{i}(self):\n        return {i}\n\n" for i in range(30)
    )
    lines = split_lines(source)
    chunks = chunk_lines(lines, python_boundaries(ast.parse(source)))
    assert all(c.text.startswith("    def m") for c in chunks[1:])
    assert _covered(chunks) == set(range(1, len(lines) + 1))
