"""Python symbols from `ast`: kinds, nesting, spans, signatures, docstrings, bad files."""

from __future__ import annotations

from appliance.index.symbols import parse_python, symbols_of
from tests.index.conftest import BROKEN, CART


def _symbols(source: str):
    tree, error = parse_python(source)
    assert error is None
    return {s.qualname: s for s in symbols_of(tree, "cart.py")}


def test_functions_classes_methods_and_nesting():
    found = _symbols(CART)
    assert [(q, s.kind) for q, s in found.items()] == [
        ("Cart", "class"),
        ("Cart.total", "method"),
        ("Cart.total.line", "function"),
        ("Cart.save", "method"),
        ("Cart.Receipt", "class"),
        ("Cart.Receipt.render", "method"),
        ("helper", "function"),
    ]
    assert {s.path for s in found.values()} == {"cart.py"}
    assert found["Cart.total.line"].name == "line"


def test_spans_include_decorators():
    found = _symbols(CART)
    lines = CART.splitlines()
    cart = found["Cart"]
    assert lines[cart.start - 1] == "@dataclass"
    assert lines[cart.end - 1] == '            return "receipt"'
    total = found["Cart.total"]
    assert lines[total.start - 1].strip().startswith("def total(")
    assert lines[total.end - 1].strip().startswith("return sum(")
    assert lines[found["helper"].start - 1] == "@staticmethod"
    assert found["helper"].end == len(lines)


def test_signatures_keep_defaults_annotations_and_async():
    found = _symbols(CART)
    assert found["Cart.total"].signature == (
        "def total(self, discount: float=0.0, *, currency='EUR') -> float"
    )
    assert found["Cart.save"].signature == "async def save(self, store) -> None"
    assert found["helper"].signature == "def helper(*args, **kwargs)"
    assert found["Cart"].signature == "class Cart"
    tree, _ = parse_python("class A(Base, metaclass=Meta):\n    pass\n")
    assert symbols_of(tree)[0].signature == "class A(Base, metaclass=Meta)"


def test_docstrings_first_paragraph_on_one_line():
    found = _symbols(CART)
    assert found["Cart"].docstring == "A customer's cart."
    assert found["Cart.total"].docstring == "Sum of the item prices."
    assert found["Cart.save"].docstring == ""
    tree, _ = parse_python('def f():\n    """One\n    two.\n\n    Later."""\n')
    assert symbols_of(tree)[0].docstring == "One two."


def test_definitions_inside_blocks_are_found():
    source = """import sys
if sys.version_info > (3,):
    def a():
        pass
else:
    try:
        def b():
            pass
    except ImportError:
        class C:
            pass
"""
    tree, _ = parse_python(source)
    assert [(s.qualname, s.kind) for s in symbols_of(tree)] == [
        ("a", "function"),
        ("b", "function"),
        ("C", "class"),
    ]


def test_a_file_that_does_not_parse_gives_a_reason_not_an_exception():
    tree, error = parse_python(BROKEN)
    assert tree is None
    assert error.startswith("SyntaxError:") and "line 1" in error
    tree, error = parse_python("x = 1\0\n")
    assert tree is None and error
