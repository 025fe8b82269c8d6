"""Searching a snapshot: by meaning (MiniLM, cosine) and by words (FTS5, bm25)."""

from __future__ import annotations

import pytest

from appliance import index
from appliance.index.fts import match_expression, phrases

HOSTILE = [
    '"foo" AND (',
    "NEAR*",
    "NEAR(a b, 2)",
    "*",
    ")",
    "'",
    '"',
    "title:foo",
    "^start",
    "a OR",
    "NOT",
    "-x +y",
    "{a b}: c",
    "\0",
    "ünïcödé ☃",
    "x" * 5000,
]


@pytest.fixture
def snapshot(db, shop, package_id, embedder):
    return index.index_commit(db, shop.bare, shop.first, package_id=package_id, embedder=embedder)


def test_similar_ranks_the_file_about_the_query_first(db, snapshot, embedder):
    hits = index.similar(
        db, snapshot.id, "will it rain tomorrow? storm and cloud forecast", k=5, embedder=embedder
    )
    assert hits[0].path == "docs/weather.md" and hits[0].why == "similar"
    assert len(hits) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert 0 < hits[0].score <= 1.0001
    tax = index.similar(db, snapshot.id, "add value-added tax to an amount", k=3, embedder=embedder)
    assert tax[0].path == "src/shop/taxes.py"
    assert "def add_vat" in tax[0].text and tax[0].start == 1
    assert index.similar(db, snapshot.id, "anything", k=0, embedder=embedder) == []


def test_fulltext_finds_identifiers(db, snapshot):
    hits = index.fulltext(db, snapshot.id, "add_vat")
    assert {h.path for h in hits} == {"src/shop/taxes.py", "src/shop/pricing.py"}
    assert hits[0].path == "src/shop/taxes.py"  # defines it and mentions VAT twice more
    assert all(h.why == "fulltext" and h.score > 0 for h in hits)
    assert index.fulltext(db, snapshot.id, "Receipt")[0].path == "src/shop/cart.py"
    hits = index.fulltext(db, snapshot.id, "where is the price_of function?", k=2)
    assert len(hits) == 2
    assert index.fulltext(db, snapshot.id, "  ") == []


@pytest.mark.parametrize("query", HOSTILE)
def test_fulltext_survives_hostile_query_text(db, snapshot, query):
    assert isinstance(index.fulltext(db, snapshot.id, query), list)


def test_query_words_become_quoted_phrases():
    assert phrases('"foo" AND (') == [("foo",), ("and",)]
    assert phrases("NEAR* price_of a.b.c Price_Of") == [("near",), ("price", "of"), ("a", "b", "c")]
    assert phrases("( ) * - _") == []
    assert match_expression(("price", "of")) == '"price of"'
