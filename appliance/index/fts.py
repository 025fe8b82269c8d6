"""Full-text queries and their scores: user text made into a safe FTS5 query, and bm25
computed over one snapshot's chunks.

FTS5's own bm25() takes its statistics (how many chunks hold a word, average length)
from the whole table, which holds every snapshot of every package: a file added in a
later commit would move the scores of an earlier snapshot. So FTS5 only says which
chunks match; the score uses the snapshot's own statistics.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

WORD = re.compile(r"[^\W_]+")  # what FTS5's unicode61 tokenizer keeps as a token
MAX_PHRASES = 64
K1, B = 1.2, 0.75  # FTS5's bm25 parameters


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def phrases(query: str) -> list[tuple[str, ...]]:
    """Each whitespace-separated word of `query` as a phrase of its letters and digits
    (`parse_quantity` → ("parse", "quantity")), without repeats, at most MAX_PHRASES."""
    found: list[tuple[str, ...]] = []
    for word in query.split():
        phrase = tuple(words(word))
        if phrase and phrase not in found:
            found.append(phrase)
    return found[:MAX_PHRASES]


def match_expression(phrase: Sequence[str]) -> str:
    """The phrase as an FTS5 string: quoted, so FTS5 syntax in it (AND, NEAR, *, column
    filters) is only ever read as words. Tokens hold letters and digits only, no quotes."""
    return '"' + " ".join(phrase) + '"'


def occurrences(tokens: Sequence[str], phrase: Sequence[str]) -> int:
    n = len(phrase)
    return sum(1 for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n]) == phrase)


def bm25(tf: int, df: int, chunks: int, length: int, average: float) -> float:
    """One phrase's bm25 term for a chunk, as FTS5 computes it."""
    idf = math.log((chunks - df + 0.5) / (df + 0.5) + 1)
    norm = 1 - B + B * length / (average or 1)
    return idf * tf * (K1 + 1) / (tf + K1 * norm)
