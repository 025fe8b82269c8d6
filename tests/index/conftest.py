"""Index fixtures: a small real project in git, its bare copy as the corpus repository, a
package row to index it under, and MiniLM loaded once per session."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import GIT_ENV, RepoBuilder

CART = '''"""Shopping carts."""

import json
from dataclasses import dataclass

from shop.pricing import price_of


@dataclass
class Cart:
    """A customer's cart.

    Holds items until checkout.
    """

    items: list

    def total(self, discount: float = 0.0, *, currency="EUR") -> float:
        """Sum of the item prices."""

        def line(item):
            return price_of(item)

        return sum(line(i) for i in self.items) * (1 - discount)

    async def save(self, store) -> None:
        await store.put(json.dumps(self.items))

    class Receipt:
        def render(self):
            return "receipt"


@staticmethod
def helper(*args, **kwargs):
    pass
'''
PRICING = '''from . import taxes


def price_of(item: str, qty: int = 1) -> float:
    """The price of `qty` items, VAT included."""
    return taxes.add_vat(10.0 * qty)
'''
TAXES_V1 = '''VAT = 0.2


def add_vat(amount):
    """Add value-added tax."""
    return amount * (1 + VAT)
'''
TAXES_V2 = TAXES_V1.replace("0.2", "0.25")
TEXT_UTIL = """from ..pricing import price_of
from .. import cart


def label(item):
    return f"{item}: {price_of(item)}"
"""
TEST_CART = """import pytest

import shop.cart
from shop import pricing


def test_total():
    assert shop.cart.Cart([]).total() == 0
"""
WEATHER = """# Weather notes

Tomorrow brings rain showers and heavy clouds over the hills; the forecast says the storm
clears by the evening, with wind from the west and cold temperatures overnight.
"""
BROKEN = "def oops(:\n    pass\n"
LONG = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(40))
FUTURE = '"""zanzibarquux: the planted future module."""\n\n\ndef zanzibarquux():\n    return 1\n'


@dataclass
class ShopRepo:
    """The project: `source` is the working repository, `bare` the corpus copy."""

    source: RepoBuilder
    bare: Path
    first: str

    def commit(self, message: str, files: dict[str, str | None]) -> str:
        sha = self.source.commit(message, files)
        _git("--git-dir", str(self.bare), "fetch", "-q", str(self.source.path), "main:main")
        return sha


def _git(*args: str) -> None:
    import os

    subprocess.run(["git", *args], check=True, capture_output=True, env={**os.environ, **GIT_ENV})


@pytest.fixture
def shop(tmp_path) -> ShopRepo:
    source = RepoBuilder(tmp_path / "shop-src")
    (source.path / "logo.png").parent.mkdir(parents=True, exist_ok=True)
    (source.path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    (source.path / "link.py").symlink_to("src/shop/cart.py")
    first = source.commit(
        "A shop",
        {
            "pyproject.toml": '[project]\nname = "shop"\n',
            "README.md": "# Shop\n\nA small shop.\n",
            "docs/weather.md": WEATHER,
            "src/shop/__init__.py": "from .cart import Cart\n",
            "src/shop/cart.py": CART,
            "src/shop/pricing.py": PRICING,
            "src/shop/taxes.py": TAXES_V1,
            "src/shop/util/__init__.py": "",
            "src/shop/util/text.py": TEXT_UTIL,
            "src/shop/long.py": LONG,
            "tests/test_cart.py": TEST_CART,
            "broken.py": BROKEN,
        },
    )
    bare = tmp_path / "shop.git"
    _git("clone", "-q", "--bare", str(source.path), str(bare))
    return ShopRepo(source, bare, first)


@pytest.fixture
def package_id(db) -> int:
    """A package row to index under (snapshots belong to a package)."""
    return db.execute(
        "INSERT INTO packages (name, version, manifest_sha256, path, split, test_command, "
        "test_timeout_s, requirements, ingested_at) VALUES ('shop', '1.0', 'f00d', "
        "'corpus/shop-1.0', 'train', '[]', 60, '[]', '2024-01-01T00:00:00+00:00')"
    ).lastrowid


@pytest.fixture(scope="session")
def embedder():
    from appliance.index import default_embedder

    return default_embedder()


class CountingEmbedder:
    """The real embedder, recording every text it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts.extend(texts)
        return self.inner.embed(texts)


@pytest.fixture
def counting(embedder) -> CountingEmbedder:
    return CountingEmbedder(embedder)
