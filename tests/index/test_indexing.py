"""Indexing a real repository: files, symbols, imports and chunks in the database;
incremental re-indexing by blob; nothing from a later commit in an earlier snapshot."""

from __future__ import annotations

import pytest

from appliance import index
from appliance.errors import IndexingError
from appliance.index.chunks import WINDOW
from tests.conftest import git
from tests.index.conftest import FUTURE, LONG, TAXES_V2

EXPECTED_FILES = {
    "README.md": "markdown",
    "broken.py": "python",
    "docs/weather.md": "markdown",
    "logo.png": "other",
    "pyproject.toml": "toml",
    "src/shop/__init__.py": "python",
    "src/shop/cart.py": "python",
    "src/shop/long.py": "python",
    "src/shop/pricing.py": "python",
    "src/shop/taxes.py": "python",
    "src/shop/util/__init__.py": "python",
    "src/shop/util/text.py": "python",
    "tests/test_cart.py": "python",
}


def _counts(db) -> dict[str, int]:
    tables = [
        "index_snapshots",
        "index_files",
        "index_blobs",
        "index_symbols",
        "index_imports",
        "index_chunks",
        "index_chunk_vectors",
        "index_chunk_text",
    ]
    return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def _view(db, snapshot_id: int) -> dict:
    """Everything a stage can read of a snapshot."""
    return {
        "files": index.files(db, snapshot_id),
        "symbols": index.symbols(db, snapshot_id),
        "imports": index.imports(db, snapshot_id),
        "texts": {
            f.path: index.file_text(db, snapshot_id, f.path)
            for f in index.files(db, snapshot_id)
            if f.path != "logo.png"
        },
        "fulltext": index.fulltext(db, snapshot_id, "add_vat VAT amount"),
    }


def test_files_languages_sizes_and_blobs(db, shop, package_id, embedder):
    snapshot = index.index_commit(
        db, shop.bare, shop.first, package_id=package_id, embedder=embedder
    )
    assert snapshot.sha == shop.first and snapshot.package_id == package_id
    entries = index.files(db, snapshot.id)
    assert snapshot.files == len(EXPECTED_FILES)
    assert snapshot.new_blobs == len({e.blob for e in entries}) == len(EXPECTED_FILES)
    assert {f.path: f.language for f in entries} == EXPECTED_FILES  # link.py (symlink) skipped
    for entry in entries:
        assert entry.blob == git(shop.source.path, "rev-parse", f"HEAD:{entry.path}")
        assert entry.size == (shop.source.path / entry.path).stat().st_size
    assert index.file_text(db, snapshot.id, "src/shop/taxes.py").startswith("VAT = 0.2")
    with pytest.raises(IndexingError, match="binary"):
        index.file_text(db, snapshot.id, "logo.png")
    with pytest.raises(IndexingError, match="not a file"):
        index.file_text(db, snapshot.id, "link.py")
    with pytest.raises(IndexingError, match="no index snapshot"):
        index.files(db, snapshot.id + 1)


def test_symbols_of_the_snapshot(db, shop, package_id, embedder):
    snapshot = index.index_commit(
        db, shop.bare, shop.first, package_id=package_id, embedder=embedder
    )
    cart = index.symbols(db, snapshot.id, ["src/shop/cart.py"])
    assert [s.qualname for s in cart] == [
        "Cart",
        "Cart.total",
        "Cart.total.line",
        "Cart.save",
        "Cart.Receipt",
        "Cart.Receipt.render",
        "helper",
    ]
    assert cart[1] == index.Symbol(
        path="src/shop/cart.py",
        name="total",
        qualname="Cart.total",
        kind="method",
        start=18,
        end=24,
        signature="def total(self, discount: float=0.0, *, currency='EUR') -> float",
        docstring="Sum of the item prices.",
    )
    everything = index.symbols(db, snapshot.id)
    assert {s.path for s in everything} == {
        "src/shop/cart.py",
        "src/shop/long.py",
        "src/shop/pricing.py",
        "src/shop/taxes.py",
        "src/shop/util/text.py",
        "tests/test_cart.py",
    }  # broken.py does not parse: no symbols, and no error either
    error = db.execute(
        "SELECT parse_error FROM index_blobs WHERE blob = ?",
        [git(shop.source.path, "rev-parse", "HEAD:broken.py")],
    ).fetchone()[0]
    assert error.startswith("SyntaxError")
    assert index.symbols(db, snapshot.id, ["nope.py"]) == []


def test_imports_and_neighbours(db, shop, package_id, embedder):
    snapshot = index.index_commit(
        db, shop.bare, shop.first, package_id=package_id, embedder=embedder
    )
    assert index.imports(db, snapshot.id) == [
        ("src/shop/__init__.py", "src/shop/cart.py"),
        ("src/shop/cart.py", "src/shop/pricing.py"),
        ("src/shop/pricing.py", "src/shop/taxes.py"),
        ("src/shop/util/text.py", "src/shop/cart.py"),
        ("src/shop/util/text.py", "src/shop/pricing.py"),
        ("tests/test_cart.py", "src/shop/cart.py"),
        ("tests/test_cart.py", "src/shop/pricing.py"),
    ]
    assert index.neighbours(db, snapshot.id, ["src/shop/pricing.py"]) == {
        "src/shop/cart.py",
        "src/shop/taxes.py",
        "src/shop/util/text.py",
        "tests/test_cart.py",
    }
    assert index.neighbours(db, snapshot.id, ["README.md"]) == set()


def test_chunks_cover_every_line_of_every_text_file(db, shop, package_id, embedder):
    snapshot = index.index_commit(
        db, shop.bare, shop.first, package_id=package_id, embedder=embedder
    )
    for entry in index.files(db, snapshot.id):
        rows = db.execute(
            "SELECT seq, start_line, end_line, text FROM index_chunks WHERE blob = ? ORDER BY seq",
            [entry.blob],
        ).fetchall()
        if entry.path == "logo.png" or entry.size == 0:
            assert rows == []
            continue
        lines = index.file_text(db, snapshot.id, entry.path).splitlines(keepends=True)
        covered = {n for _, start, end, _ in rows for n in range(start, end + 1)}
        assert covered == set(range(1, len(lines) + 1)), entry.path
        for _, start, end, text in rows:
            assert text == "".join(lines[start - 1 : end])
            assert end - start + 1 <= WINDOW
        vectors = db.execute(
            "SELECT count(*) FROM index_chunk_vectors WHERE chunk_id IN "
            "(SELECT id FROM index_chunks WHERE blob = ?)",
            [entry.blob],
        ).fetchone()[0]
        assert vectors == len(rows)
    assert (
        len(
            db.execute(
                "SELECT id FROM index_chunks WHERE blob = ?",
                [git(shop.source.path, "rev-parse", "HEAD:src/shop/long.py")],
            ).fetchall()
        )
        >= 4
    )


def test_incremental_reindex_embeds_only_the_changed_blob(db, shop, package_id, counting):
    first = index.index_commit(db, shop.bare, shop.first, package_id=package_id, embedder=counting)
    before = _view(db, first.id)
    counts = _counts(db)
    embedded_first = len(counting.texts)
    assert embedded_first == counts["index_chunks"]
    second_sha = shop.commit("Raise VAT", {"src/shop/taxes.py": TAXES_V2})
    counting.texts.clear()
    second = index.index_commit(db, shop.bare, second_sha, package_id=package_id, embedder=counting)
    assert second.new_blobs == 1 and second.files == first.files and second.id != first.id
    new_blob = git(shop.source.path, "rev-parse", "HEAD:src/shop/taxes.py")
    new_chunks = [
        r[0]
        for r in db.execute("SELECT text FROM index_chunks WHERE blob = ? ORDER BY seq", [new_blob])
    ]
    assert counting.texts == new_chunks  # only the changed file was chunked and embedded
    after = _counts(db)
    assert after["index_blobs"] == counts["index_blobs"] + 1
    assert after["index_chunks"] == counts["index_chunks"] + len(new_chunks)
    assert after["index_chunk_vectors"] == after["index_chunks"] == after["index_chunk_text"]
    assert after["index_symbols"] == counts["index_symbols"] + 1  # add_vat, again
    assert after["index_files"] == 2 * counts["index_files"]
    assert _view(db, first.id) == before  # the first snapshot reads as it did
    assert "0.25" in index.file_text(db, second.id, "src/shop/taxes.py")
    assert "0.2\n" in index.file_text(db, first.id, "src/shop/taxes.py")


def test_a_file_added_later_never_shows_in_the_earlier_snapshot(db, shop, package_id, embedder):
    later = shop.commit("Plant the future", {"src/shop/future.py": FUTURE})
    # Index the later commit first, so the future blob is in the database already.
    new = index.index_commit(db, shop.bare, later, package_id=package_id, embedder=embedder)
    old = index.index_commit(db, shop.bare, shop.first, package_id=package_id, embedder=embedder)
    assert old.new_blobs == 0  # every blob of the old commit is in the newer one
    assert "src/shop/future.py" in {f.path for f in index.files(db, new.id)}
    assert index.fulltext(db, new.id, "zanzibarquux")[0].path == "src/shop/future.py"
    assert "src/shop/future.py" not in {f.path for f in index.files(db, old.id)}
    assert index.fulltext(db, old.id, "zanzibarquux") == []
    hits = index.similar(db, old.id, FUTURE, k=100, embedder=embedder)
    assert hits and all(h.path != "src/shop/future.py" for h in hits)
    assert all(s.path != "src/shop/future.py" for s in index.symbols(db, old.id))
    assert index.symbols(db, old.id, ["src/shop/future.py"]) == []
    assert all("future" not in a + b for a, b in index.imports(db, old.id))
    with pytest.raises(IndexingError):
        index.file_text(db, old.id, "src/shop/future.py")


def test_indexing_twice_returns_the_same_snapshot_and_adds_nothing(db, shop, package_id, counting):
    first = index.index_commit(db, shop.bare, shop.first, package_id=package_id, embedder=counting)
    counts = _counts(db)
    counting.texts.clear()
    again = index.index_commit(db, shop.bare, shop.first, package_id=package_id, embedder=counting)
    assert again == first
    short = index.index_commit(db, shop.bare, shop.first[:10], package_id=package_id)
    assert short == first
    assert counting.texts == [] and _counts(db) == counts


def test_a_blob_first_seen_as_text_gets_symbols_when_it_becomes_python(
    db, shop, package_id, embedder
):
    code = "def renamed():\n    return 1\n"
    one = shop.commit("notes", {"notes.txt": code})
    two = shop.commit("notes become code", {"notes.txt": None, "notes.py": code})
    a = index.index_commit(db, shop.bare, one, package_id=package_id, embedder=embedder)
    b = index.index_commit(db, shop.bare, two, package_id=package_id, embedder=embedder)
    assert b.new_blobs == 0
    assert index.symbols(db, b.id, ["notes.py"]) == [
        index.Symbol("notes.py", "renamed", "renamed", "function", 1, 2, "def renamed()", "")
    ]
    assert index.symbols(db, a.id, ["notes.txt"]) == []  # symbols are of Python files only


def test_unknown_commits_are_refused(db, shop, package_id):
    for bad in ["0" * 40, "--output=/tmp/x", "HEAD", ""]:
        with pytest.raises(IndexingError):
            index.index_commit(db, shop.bare, bad, package_id=package_id)
    tree = git(shop.source.path, "rev-parse", "HEAD^{tree}")
    with pytest.raises(IndexingError):
        index.index_commit(db, shop.bare, tree, package_id=package_id)
    with pytest.raises(IndexingError, match="no package"):
        index.index_commit(db, shop.bare, shop.first, package_id=package_id + 1)


def test_an_edited_file_re_embeds_only_its_changed_chunks(db, shop, package_id, counting):
    index.index_commit(db, shop.bare, shop.first, package_id=package_id, embedder=counting)
    edited = LONG.replace("return x + 39", "return x - 39")
    later = shop.commit("Edit the last function", {"src/shop/long.py": edited})
    counting.texts.clear()
    snapshot = index.index_commit(db, shop.bare, later, package_id=package_id, embedder=counting)
    assert snapshot.new_blobs == 1
    blob = git(shop.source.path, "rev-parse", "HEAD:src/shop/long.py")
    chunks = db.execute(
        "SELECT text FROM index_chunks WHERE blob = ? ORDER BY seq", [blob]
    ).fetchall()
    assert len(chunks) >= 4
    assert counting.texts == [t for (t,) in chunks if "x - 39" in t]  # the last chunk only
    assert len(counting.texts) == 1
    # Equal text (whitespace aside), equal vector, whichever blob it came from.
    rows = db.execute(
        "SELECT c.embedding_key, v.embedding FROM index_chunks c "
        "JOIN index_chunk_vectors v ON v.chunk_id = c.id"
    ).fetchall()
    by_text: dict[str, set[bytes]] = {}
    for key, vector in rows:
        by_text.setdefault(key, set()).add(bytes(vector))
    assert all(len(vectors) == 1 for vectors in by_text.values())
    assert len(rows) > len(by_text)  # some texts are shared by the two versions


def test_progress_and_files_too_large_to_read(db, shop, package_id, embedder, monkeypatch):
    from appliance.index import indexer

    monkeypatch.setattr(indexer, "MAX_BLOB_BYTES", 200)
    monkeypatch.setattr(indexer, "BLOB_BATCH", 5)
    calls = []
    snapshot = index.index_commit(
        db,
        shop.bare,
        shop.first,
        package_id=package_id,
        embedder=embedder,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 13), (5, 13), (10, 13), (13, 13)]
    big = {f.path: f for f in index.files(db, snapshot.id)}["src/shop/cart.py"]
    assert big.size > 200 and big.language == "python"
    with pytest.raises(IndexingError, match="too large"):
        index.file_text(db, snapshot.id, "src/shop/cart.py")
    assert index.symbols(db, snapshot.id, ["src/shop/cart.py"]) == []
    assert index.fulltext(db, snapshot.id, "Receipt") == []
    assert index.file_text(db, snapshot.id, "src/shop/taxes.py").startswith("VAT")
