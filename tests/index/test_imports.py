"""Resolving imports to the snapshot's own files: absolute, relative, src layout."""

from __future__ import annotations

import ast

from appliance.index.imports import (
    ImportStatement,
    from_json,
    import_statements,
    module_names,
    resolve_imports,
    to_json,
)

PATHS = [
    "setup.py",
    "src/shop/__init__.py",
    "src/shop/cart.py",
    "src/shop/pricing.py",
    "src/shop/taxes.py",
    "src/shop/util/__init__.py",
    "src/shop/util/text.py",
    "tests/helpers.py",
    "tests/test_cart.py",
    "tools/a/run.py",
    "tools/b/run.py",
    "README.md",
]


def _edges(sources: dict[str, str]) -> set[tuple[str, str]]:
    statements = {p: import_statements(ast.parse(s)) for p, s in sources.items()}
    return resolve_imports(statements, PATHS)


def test_module_names_from_package_roots_and_src_layout():
    names = module_names(PATHS)
    assert names["shop"] == "src/shop/__init__.py"
    assert names["shop.util.text"] == "src/shop/util/text.py"
    assert names["src.shop.cart"] == "src/shop/cart.py"
    assert names["helpers"] == "tests/helpers.py"
    assert names["tests.helpers"] == "tests/helpers.py"
    assert "run" not in names  # two files claim it: left out, not guessed
    assert names["tools.a.run"] == "tools/a/run.py"
    assert "README" not in names


def test_absolute_relative_and_external_imports():
    edges = _edges(
        {
            "src/shop/__init__.py": "from .cart import Cart\n",
            "src/shop/cart.py": "import json\nfrom shop.pricing import price_of\n",
            "src/shop/pricing.py": "from . import taxes\nimport requests\n",
            "src/shop/util/text.py": "from ..pricing import price_of\nfrom .. import cart\n",
            "tests/test_cart.py": (
                "import pytest\nimport shop.cart\nfrom shop import pricing, Cart\n"
                "from helpers import make\nimport os.path\n"
            ),
            "setup.py": "from setuptools import setup\nfrom . import nothing\n",
        }
    )
    assert edges == {
        ("src/shop/__init__.py", "src/shop/cart.py"),
        ("src/shop/cart.py", "src/shop/pricing.py"),
        ("src/shop/pricing.py", "src/shop/taxes.py"),
        ("src/shop/util/text.py", "src/shop/pricing.py"),
        ("src/shop/util/text.py", "src/shop/cart.py"),
        ("tests/test_cart.py", "src/shop/cart.py"),
        ("tests/test_cart.py", "src/shop/pricing.py"),
        ("tests/test_cart.py", "src/shop/__init__.py"),  # Cart comes from the package
        ("tests/test_cart.py", "tests/helpers.py"),
    }


def test_import_of_a_package_and_imports_inside_functions():
    edges = _edges(
        {
            "tools/a/run.py": (
                "def main():\n    import shop.util\n    from shop.util.text import label\n"
            ),
            "src/shop/taxes.py": "from .util import text\nfrom ... import beyond\n",
        }
    )
    assert edges == {
        ("tools/a/run.py", "src/shop/util/__init__.py"),
        ("tools/a/run.py", "src/shop/util/text.py"),
        ("src/shop/taxes.py", "src/shop/util/text.py"),
    }


def test_statements_round_trip_through_json():
    found = import_statements(ast.parse("import a.b as c\nfrom ..x import y, z\nfrom . import *\n"))
    assert found == [
        ImportStatement("a.b", (), 0),
        ImportStatement("x", ("y", "z"), 2),
        ImportStatement("", ("*",), 1),
    ]
    assert from_json(to_json(found)) == found
