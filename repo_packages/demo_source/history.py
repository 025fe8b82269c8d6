"""The git history of Forge's demo repository, as data, oldest commit first.

The demo project is "metrica", a small unit-aware quantity library: parse "12.5 km",
convert, compare, add and format quantities. make_demo_repo.py replays this list.

A commit's changes either write a whole file, append a top-level block to one, or
replace one exact snippet of it (insert_after is a replacement that keeps its anchor).
In every text below, the newline right after the opening quotes is not part of it.

`kind` says what Forge's commit miner should make of a commit:

- "task": code and tests together; the tests it adds or changes fail at its parent;
- "refactor": code only; the suite is unchanged and passes;
- any other kind names the first mining filter that drops the commit, as
  appliance/packages/mining.py names it: "root" (the project skeleton), "merge", "bot",
  "message" (wip, release), "docs-or-ci-only" or "too-many-lines" (200 or more).
"""

from __future__ import annotations

from dataclasses import dataclass

TASK_KINDS = ("task", "refactor")
FILTER_KINDS = ("root", "merge", "bot", "message", "docs-or-ci-only", "too-many-lines")


@dataclass(frozen=True)
class Author:
    name: str
    email: str


@dataclass(frozen=True)
class Write:
    path: str
    content: str


@dataclass(frozen=True)
class Append:
    path: str
    block: str


@dataclass(frozen=True)
class Replace:
    path: str
    old: str
    new: str


Change = Write | Append | Replace


@dataclass(frozen=True)
class Commit:
    message: str
    author: Author
    changes: tuple[Change, ...]
    kind: str = "task"
    branch: str = "main"

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]


@dataclass(frozen=True)
class Merge:
    """A --no-ff merge of `branch` into main."""

    branch: str
    message: str
    author: Author
    kind: str = "merge"

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]


def _text(text: str) -> str:
    return text.removeprefix("\n")


def write(path: str, content: str) -> Write:
    return Write(path, _text(content))


def append(path: str, block: str) -> Append:
    return Append(path, _text(block))


def replace(path: str, old: str, new: str) -> Replace:
    return Replace(path, _text(old), _text(new))


def insert_after(path: str, anchor: str, text: str) -> Replace:
    return Replace(path, _text(anchor), _text(anchor) + _text(text))


# The history below is laid out as text blocks, which a formatter would only scatter.
# fmt: off

DANA = Author("Dana Reyes", "dana@demo.invalid")
TOMAS = Author("Tomas Okafor", "tomas@demo.invalid")
PRIYA = Author("Priya Natarajan", "priya@demo.invalid")
DEPENDABOT = Author("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com")

INIT = "src/metrica/__init__.py"
UNITS = "src/metrica/units.py"
QUANTITY = "src/metrica/quantity.py"
PARSER = "src/metrica/parser.py"
FORMATTING = "src/metrica/formatting.py"
IMPERIAL = "src/metrica/imperial.py"
TEST_PARSER = "tests/test_parser.py"
TEST_QUANTITY = "tests/test_quantity.py"
TEST_UNITS = "tests/test_units.py"
TEST_FORMATTING = "tests/test_formatting.py"
TEST_IMPERIAL = "tests/test_imperial.py"


SKELETON = Commit(
    "Create project skeleton with quantity parser",
    DANA,
    (
        write(".gitignore", r'''
__pycache__/
*.egg-info/
.pytest_cache/
.venv/
'''),
        write("pyproject.toml", r'''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "metrica"
version = "0.1.0"
description = "Unit-aware quantities: parse, convert and format measurements"
readme = "README.md"
requires-python = ">=3.10"
license = { text = "MIT" }
authors = [{ name = "Dana Reyes", email = "dana@demo.invalid" }]

[tool.pytest.ini_options]
pythonpath = ["src"]
testpaths = ["tests"]
'''),
        write("requirements-dev.txt", r'''
pytest==8.0.0
'''),
        write("README.md", r'''
# metrica

Unit-aware quantities for Python: parse text such as `"12.5 km"`, convert it to other
units, and turn it back into text.

```python
from metrica import parse_quantity

distance = parse_quantity("12.5 km")
print(distance.to("m").value)  # 12500.0
```

## Development

The library has no runtime dependencies. To run the tests:

    pip install -r requirements-dev.txt
    pytest
'''),
        write(INIT, r'''
"""Unit-aware quantities: parse, convert and format measurements."""

from metrica.parser import parse_quantity
from metrica.quantity import Quantity
from metrica.units import UnknownUnitError, get_unit

__all__ = ["Quantity", "UnknownUnitError", "get_unit", "parse_quantity"]
__version__ = "0.1.0"
'''),
        write(UNITS, r'''
"""Units of measurement and the registry that resolves their symbols."""

from __future__ import annotations

from dataclasses import dataclass


class UnknownUnitError(ValueError):
    """Raised when a unit symbol is not in the registry."""


@dataclass(frozen=True)
class Unit:
    """A unit: its symbol, the dimension it measures and its size in base units."""

    symbol: str
    dimension: str
    factor: float


_UNITS = {
    unit.symbol: unit
    for unit in [
        Unit("m", "length", 1.0),
        Unit("km", "length", 1000.0),
        Unit("cm", "length", 0.01),
        Unit("mm", "length", 0.001),
        Unit("g", "mass", 0.001),
        Unit("kg", "mass", 1.0),
        Unit("s", "time", 1.0),
        Unit("min", "time", 60.0),
        Unit("h", "time", 3600.0),
    ]
}


def get_unit(symbol: str) -> Unit:
    """Return the unit registered under ``symbol``."""
    try:
        return _UNITS[symbol]
    except KeyError:
        raise UnknownUnitError(f"unknown unit: {symbol!r}") from None
'''),
        write(QUANTITY, r'''
"""The Quantity type: a value together with its unit."""

from __future__ import annotations

from dataclasses import dataclass

from metrica.units import Unit, get_unit


@dataclass(frozen=True)
class Quantity:
    """A numeric value measured in a unit."""

    value: float
    unit: Unit

    def to(self, symbol: str) -> Quantity:
        """Return this quantity expressed in the unit named ``symbol``."""
        target = get_unit(symbol)
        return Quantity(self.value * self.unit.factor / target.factor, target)
'''),
        write(PARSER, r'''
"""Parsing of quantities written as text, such as ``"12.5 km"``."""

from __future__ import annotations

import re

from metrica.quantity import Quantity
from metrica.units import get_unit


def parse_quantity(text: str) -> Quantity:
    """Parse ``text`` such as ``"12.5 km"`` into a Quantity."""
    match = re.match(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)$", text)
    if match is None:
        raise ValueError(f"cannot parse quantity: {text!r}")
    value, symbol = match.groups()
    return Quantity(float(value), get_unit(symbol))
'''),
        write(TEST_PARSER, r'''
import pytest

from metrica import parser, units


def test_parses_value_and_unit():
    quantity = parser.parse_quantity("12.5 km")
    assert quantity.value == 12.5
    assert quantity.unit == units.get_unit("km")


def test_space_between_value_and_unit_is_optional():
    assert parser.parse_quantity("3kg").value == 3.0


def test_rejects_text_without_a_unit():
    with pytest.raises(ValueError):
        parser.parse_quantity("12")


def test_reports_unknown_units():
    with pytest.raises(units.UnknownUnitError, match="smoot"):
        parser.parse_quantity("3 smoot")
'''),
        write(TEST_QUANTITY, r'''
import pytest

from metrica import quantity, units


def q(value, symbol):
    return quantity.Quantity(value, units.get_unit(symbol))


def test_converts_kilometres_to_metres():
    assert q(2.5, "km").to("m").value == 2500.0


def test_converts_to_a_larger_unit():
    assert q(90, "min").to("h").value == pytest.approx(1.5)


def test_conversion_returns_the_target_unit():
    assert q(1, "kg").to("g").unit == units.get_unit("g")
'''),
    ),
    kind="root",
)


PARSER_BASICS = [
    Commit(
        "Strip surrounding whitespace before parsing quantities",
        TOMAS,
        (
            replace(PARSER, r'''
    match = re.match(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)$", text)
''', r'''
    match = re.match(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)$", text.strip())
'''),
            append(TEST_PARSER, r'''
def test_ignores_surrounding_whitespace():
    assert parser.parse_quantity("  7 m\n").value == 7.0
'''),
        ),
    ),
    Commit(
        "Support negative values in the quantity parser",
        DANA,
        (
            replace(PARSER, r'''
    match = re.match(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)$", text.strip())
''', r'''
    match = re.match(r"([-+]?\d+(?:\.\d+)?)\s*([A-Za-z]+)$", text.strip())
'''),
            append(TEST_PARSER, r'''
def test_parses_signed_values():
    assert parser.parse_quantity("-4.5 m").value == -4.5
    assert parser.parse_quantity("+2 s").value == 2.0
'''),
        ),
    ),
    Commit(
        "Parse scientific notation in quantity values\n\n"
        "Instrument exports write very large and very small readings as 1.5e3\n"
        "or 2E-3; the parser rejected them as unparsable.",
        PRIYA,
        (
            replace(PARSER, r'''
    match = re.match(r"([-+]?\d+(?:\.\d+)?)\s*([A-Za-z]+)$", text.strip())
''', r'''
    match = re.match(r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*([A-Za-z]+)$", text.strip())
'''),
            append(TEST_PARSER, r'''
def test_parses_scientific_notation():
    assert parser.parse_quantity("1.5e3 m").value == 1500.0
    assert parser.parse_quantity("2E-3 kg").value == 0.002
'''),
        ),
    ),
    Commit(
        "Run the test suite on GitHub Actions",
        TOMAS,
        (
            write(".github/workflows/tests.yml", r'''
name: tests

on:
  push:
    branches: [main]
  pull_request:

jobs:
  pytest:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        python-version: ["3.10", "3.11", "3.12"]
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python-version }}
      - run: pip install -r requirements-dev.txt
      - run: pytest -q
'''),
        ),
        kind="docs-or-ci-only",
    ),
]


ARITHMETIC_AND_PREFIXES = [
    Commit(
        "Reject conversions between incompatible dimensions\n\n"
        "Converting 5 kg to metres multiplied by the two unit factors and\n"
        "returned a meaningless number instead of failing.",
        DANA,
        (
            insert_after(UNITS, r'''
class UnknownUnitError(ValueError):
    """Raised when a unit symbol is not in the registry."""
''', r'''


class DimensionError(ValueError):
    """Raised when quantities of different dimensions are combined."""
'''),
            replace(QUANTITY, r'''
from metrica.units import Unit, get_unit
''', r'''
from metrica.units import DimensionError, Unit, get_unit
'''),
            insert_after(QUANTITY, r'''
        target = get_unit(symbol)
''', r'''
        if target.dimension != self.unit.dimension:
            raise DimensionError(f"cannot convert {self.unit.dimension} to {target.dimension}")
'''),
            replace(INIT, r'''
from metrica.units import UnknownUnitError, get_unit

__all__ = ["Quantity", "UnknownUnitError", "get_unit", "parse_quantity"]
''', r'''
from metrica.units import DimensionError, UnknownUnitError, get_unit

__all__ = ["DimensionError", "Quantity", "UnknownUnitError", "get_unit", "parse_quantity"]
'''),
            append(TEST_QUANTITY, r'''
def test_rejects_conversion_between_dimensions():
    with pytest.raises(units.DimensionError, match="mass to length"):
        q(5, "kg").to("m")
'''),
        ),
    ),
    Commit(
        "Add addition and subtraction of quantities\n\n"
        "The result is expressed in the unit of the left operand.",
        TOMAS,
        (
            insert_after(QUANTITY, r'''
        return Quantity(self.value * self.unit.factor / target.factor, target)
''', r'''

    def __add__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.value + other.to(self.unit.symbol).value, self.unit)

    def __sub__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.value - other.to(self.unit.symbol).value, self.unit)
'''),
            append(TEST_QUANTITY, r'''
def test_adds_quantities_in_the_left_unit():
    total = q(1, "h") + q(30, "min")
    assert total.value == pytest.approx(1.5)
    assert total.unit.symbol == "h"


def test_subtracts_quantities():
    assert (q(2, "min") - q(30, "s")).value == pytest.approx(1.5)


def test_adding_different_dimensions_fails():
    with pytest.raises(units.DimensionError):
        q(1, "m") + q(1, "s")
'''),
        ),
    ),
    Commit(
        "Add multiplication and division by plain numbers",
        PRIYA,
        (
            insert_after(QUANTITY, r'''
        return Quantity(self.value - other.to(self.unit.symbol).value, self.unit)
''', r'''

    def __mul__(self, factor: float) -> Quantity:
        if not isinstance(factor, (int, float)):
            return NotImplemented
        return Quantity(self.value * factor, self.unit)

    def __truediv__(self, divisor: float) -> Quantity:
        if not isinstance(divisor, (int, float)):
            return NotImplemented
        return Quantity(self.value / divisor, self.unit)
'''),
            append(TEST_QUANTITY, r'''
def test_scales_by_plain_numbers():
    assert (q(3, "m") * 4).value == 12
    assert (q(3, "m") / 2).value == 1.5
'''),
        ),
    ),
    Commit(
        "Add metric prefixes for base units\n\n"
        "Units flagged as prefixable accept the SI prefixes from nano to giga,\n"
        "so km, mg and ms no longer need table entries of their own.",
        DANA,
        (
            write(UNITS, r'''
"""Units of measurement and the registry that resolves their symbols."""

from __future__ import annotations

from dataclasses import dataclass, replace


class UnknownUnitError(ValueError):
    """Raised when a unit symbol is not in the registry."""


class DimensionError(ValueError):
    """Raised when quantities of different dimensions are combined."""


@dataclass(frozen=True)
class Unit:
    """A unit: its symbol, the dimension it measures and its size in base units."""

    symbol: str
    dimension: str
    factor: float
    prefixable: bool = False


_UNITS = {
    unit.symbol: unit
    for unit in [
        Unit("m", "length", 1.0, prefixable=True),
        Unit("g", "mass", 0.001, prefixable=True),
        Unit("s", "time", 1.0, prefixable=True),
        Unit("min", "time", 60.0),
        Unit("h", "time", 3600.0),
    ]
}

_PREFIXES = {
    "n": 1e-9,
    "µ": 1e-6,
    "m": 1e-3,
    "c": 1e-2,
    "d": 1e-1,
    "da": 1e1,
    "h": 1e2,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
}


def get_unit(symbol: str) -> Unit:
    """Return the unit registered under ``symbol``, possibly with an SI prefix."""
    if symbol in _UNITS:
        return _UNITS[symbol]
    for prefix, scale in _PREFIXES.items():
        base = _UNITS.get(symbol[len(prefix) :])
        if symbol.startswith(prefix) and base is not None and base.prefixable:
            return replace(base, factor=scale * base.factor, prefixable=False)
    raise UnknownUnitError(f"unknown unit: {symbol!r}")
'''),
            write(TEST_UNITS, r'''
import pytest

from metrica import units


@pytest.mark.parametrize(
    ("symbol", "factor"),
    [
        ("km", 1e3),
        ("cm", 1e-2),
        ("µm", 1e-6),
        ("nm", 1e-9),
        ("dam", 10.0),
        ("mg", 1e-6),
        ("ms", 1e-3),
    ],
)
def test_prefixed_units_scale_the_base_unit(symbol, factor):
    assert units.get_unit(symbol).factor == pytest.approx(factor)


def test_prefixed_units_keep_the_dimension():
    assert units.get_unit("kg").dimension == "mass"


def test_units_without_prefixes_reject_them():
    with pytest.raises(units.UnknownUnitError):
        units.get_unit("kmin")
'''),
        ),
    ),
    Commit(
        "Preserve the prefix in the symbol of prefixed units\n\n"
        'get_unit("km") returned a unit whose symbol was "m", so 1 km + 500 m\n'
        "converted the right operand to metres and added 500 to 1.",
        TOMAS,
        (
            replace(UNITS, r'''
            return replace(base, factor=scale * base.factor, prefixable=False)
''', r'''
            return replace(base, symbol=symbol, factor=scale * base.factor, prefixable=False)
'''),
            append(TEST_UNITS, r'''
def test_prefixed_units_keep_their_symbol():
    assert units.get_unit("km").symbol == "km"
'''),
            append(TEST_QUANTITY, r'''
def test_adds_quantities_with_prefixed_units():
    assert (q(1, "km") + q(500, "m")).value == pytest.approx(1.5)
'''),
        ),
    ),
    Commit(
        "Accept the micro sign in parsed unit symbols",
        PRIYA,
        (
            replace(PARSER, r'''
    match = re.match(r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*([A-Za-z]+)$", text.strip())
''', r'''
    # [^\W\d_] is any letter, the micro sign included.
    match = re.match(r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*([^\W\d_]+)$", text.strip())
'''),
            append(TEST_PARSER, r'''
def test_parses_the_micro_sign():
    assert parser.parse_quantity("250 µm").unit.symbol == "µm"
'''),
        ),
    ),
    Commit(
        "Treat Greek mu and ASCII u as the micro prefix",
        PRIYA,
        (
            insert_after(UNITS, r'''
    "G": 1e9,
}
''', r'''

# Keyboards rarely have the micro sign: Greek small mu and ASCII "u" stand in for it.
_MICRO_ALIASES = ("\u03bc", "u")
'''),
            insert_after(UNITS, r'''
    if symbol in _UNITS:
        return _UNITS[symbol]
''', r'''
    if symbol[:1] in _MICRO_ALIASES:
        symbol = "µ" + symbol[1:]
'''),
            append(TEST_UNITS, r'''
@pytest.mark.parametrize("symbol", ["um", "\u03bcm"])
def test_micro_prefix_aliases(symbol):
    assert units.get_unit(symbol) == units.get_unit("µm")
'''),
        ),
    ),
    Commit(
        "Document unit prefixes in the README",
        DANA,
        (
            replace("README.md", r'''
## Development
''', r'''
## Units

Lengths (`m`), masses (`g`) and times (`s`) take the SI prefixes from nano to giga:
`nm`, `µm`, `mm`, `cm`, `km`, `mg`, `kg`, `ms` and so on. `um` is accepted for `µm`.
Minutes (`min`) and hours (`h`) take no prefix.

## Development
'''),
        ),
        kind="docs-or-ci-only",
    ),
]


COMPARISON_AND_FORMATTING = [
    Commit(
        "Compare quantities by their value in base units\n\n"
        "Two quantities are equal when they measure the same amount, whatever\n"
        "their units: 1 km == 1000 m. Ordering converts the right operand to the\n"
        "left one's unit, so mixing dimensions raises DimensionError.",
        DANA,
        (
            replace(QUANTITY, r'''
from dataclasses import dataclass
''', r'''
import functools
import math
from dataclasses import dataclass
'''),
            replace(QUANTITY, r'''
@dataclass(frozen=True)
class Quantity:
''', r'''
@functools.total_ordering
@dataclass(frozen=True)
class Quantity:
'''),
            insert_after(QUANTITY, r'''
    unit: Unit
''', r'''

    def _base(self) -> float:
        """Return the value expressed in the base unit of its dimension."""
        return self.value * self.unit.factor
'''),
            replace(QUANTITY, r'''
        return Quantity(self.value * self.unit.factor / target.factor, target)
''', r'''
        return Quantity(self._base() / target.factor, target)
'''),
            insert_after(QUANTITY, r'''
        return Quantity(self.value / divisor, self.unit)
''', r'''

    def __eq__(self, other: object) -> bool:
        if self.unit.dimension != other.unit.dimension:
            return False
        return math.isclose(self._base(), other._base())

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.to(self.unit.symbol).value
'''),
            append(TEST_QUANTITY, r'''
def test_equal_quantities_in_different_units():
    assert q(1, "km") == q(1000, "m")
    assert q(1, "km") != q(999, "m")


def test_orders_quantities_across_units():
    assert q(90, "s") < q(2, "min")
    assert q(1, "h") >= q(60, "min")
    assert sorted([q(1, "h"), q(5, "s"), q(2, "min")])[0] == q(5, "s")
'''),
        ),
    ),
    Commit(
        "Return NotImplemented when comparing quantities with other types\n\n"
        "q == 1 raised AttributeError instead of evaluating to False.",
        TOMAS,
        (
            replace(QUANTITY, r'''
    def __eq__(self, other: object) -> bool:
        if self.unit.dimension != other.unit.dimension:
''', r'''
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        if self.unit.dimension != other.unit.dimension:
'''),
            replace(QUANTITY, r'''
    def __lt__(self, other: Quantity) -> bool:
''', r'''
    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
'''),
            append(TEST_QUANTITY, r'''
def test_compares_with_other_types():
    assert q(1, "m") != 1
    assert q(1, "m") != "1 m"
    with pytest.raises(TypeError):
        q(1, "m") < 1
'''),
        ),
    ),
    Commit(
        "Make equal quantities share a hash\n\n"
        "1 km == 1000 m, but the hash generated by the dataclass came from the\n"
        "raw fields, so sets and dictionary keys kept both.",
        PRIYA,
        (
            insert_after(QUANTITY, r'''
        return math.isclose(self._base(), other._base())
''', r'''

    def __hash__(self) -> int:
        # Rounded so that values equal under math.isclose() almost always share a hash.
        return hash((self.unit.dimension, float(f"{self._base():.9g}")))
'''),
            append(TEST_QUANTITY, r'''
def test_equal_quantities_hash_alike():
    assert len({q(1, "km"), q(1000, "m"), q(1, "m")}) == 2
'''),
        ),
    ),
    Commit(
        "Add a formatting module with fixed precision",
        DANA,
        (
            write(FORMATTING, r'''
"""Turning quantities back into text."""

from __future__ import annotations

from metrica.quantity import Quantity


def format_quantity(quantity: Quantity, precision: int = 2) -> str:
    """Format ``quantity`` as ``"<value> <symbol>"`` with ``precision`` decimals."""
    return f"{quantity.value:.{precision}f} {quantity.unit.symbol}"
'''),
            replace(INIT, r'''
from metrica.parser import parse_quantity
''', r'''
from metrica.formatting import format_quantity
from metrica.parser import parse_quantity
'''),
            replace(INIT, r'''
__all__ = ["DimensionError", "Quantity", "UnknownUnitError", "get_unit", "parse_quantity"]
''', r'''
__all__ = [
    "DimensionError",
    "Quantity",
    "UnknownUnitError",
    "format_quantity",
    "get_unit",
    "parse_quantity",
]
'''),
            write(TEST_FORMATTING, r'''
from metrica import formatting, parser


def fmt(text, **options):
    return formatting.format_quantity(parser.parse_quantity(text), **options)


def test_formats_two_decimals_by_default():
    assert fmt("3 km") == "3.00 km"


def test_precision_can_be_chosen():
    assert fmt("2.345 kg", precision=1) == "2.3 kg"
'''),
        ),
    ),
    Commit(
        "Avoid printing negative zero in formatted quantities",
        TOMAS,
        (
            replace(FORMATTING, r'''
    return f"{quantity.value:.{precision}f} {quantity.unit.symbol}"
''', r'''
    number = f"{quantity.value:.{precision}f}"
    if float(number) == 0:
        # Rounding a tiny negative value leaves "-0.00", which reads like a sign error.
        number = number.lstrip("-")
    return f"{number} {quantity.unit.symbol}"
'''),
            append(TEST_FORMATTING, r'''
def test_tiny_negative_values_do_not_print_negative_zero():
    assert fmt("-0.001 m") == "0.00 m"
'''),
        ),
    ),
    Commit(
        "Validate the precision passed to format_quantity",
        PRIYA,
        (
            insert_after(FORMATTING, r'''
    """Format ``quantity`` as ``"<value> <symbol>"`` with ``precision`` decimals."""
''', r'''
    if precision < 0:
        raise ValueError(f"precision must be at least 0, got {precision}")
'''),
            replace(TEST_FORMATTING, r'''
from metrica import formatting, parser
''', r'''
import pytest

from metrica import formatting, parser
'''),
            append(TEST_FORMATTING, r'''
def test_rejects_negative_precision():
    with pytest.raises(ValueError, match="precision must be"):
        fmt("1 m", precision=-1)
'''),
        ),
    ),
    Commit(
        "wip",
        TOMAS,
        (
            append(FORMATTING, r'''
# TODO: pick a readable prefix automatically (1500 m -> "1.5 km").
'''),
        ),
        kind="message",
    ),
    Commit(
        "Extract the quantity pattern into module constants\n\n"
        "Compiling the pattern once and naming its parts keeps the next parser\n"
        "changes readable.",
        DANA,
        (
            write(PARSER, r'''
"""Parsing of quantities written as text, such as ``"12.5 km"``."""

from __future__ import annotations

import re

from metrica.quantity import Quantity
from metrica.units import get_unit

_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
# [^\W\d_] is any letter, the micro sign included.
_SYMBOL = r"[^\W\d_]+"
_QUANTITY = re.compile(rf"({_NUMBER})\s*({_SYMBOL})")


def parse_quantity(text: str) -> Quantity:
    """Parse ``text`` such as ``"12.5 km"`` into a Quantity."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"cannot parse quantity: {text!r}")
    value, symbol = match.groups()
    return Quantity(float(value), get_unit(symbol))
'''),
        ),
        kind="refactor",
    ),
    Commit(
        "Allow multiplying a number by a quantity on the left",
        TOMAS,
        (
            insert_after(QUANTITY, r'''
        return Quantity(self.value * factor, self.unit)
''', r'''

    __rmul__ = __mul__
'''),
            append(TEST_QUANTITY, r'''
def test_number_times_quantity():
    assert (3 * q(2, "kg")).value == 6
'''),
        ),
    ),
    Commit(
        "Support sum() over a list of quantities",
        PRIYA,
        (
            insert_after(QUANTITY, r'''
        return Quantity(self.value + other.to(self.unit.symbol).value, self.unit)
''', r'''

    def __radd__(self, other: object) -> Quantity:
        # sum() starts from the integer 0.
        if other == 0:
            return self
        return NotImplemented
'''),
            append(TEST_QUANTITY, r'''
def test_sums_quantities():
    total = sum([q(1, "h"), q(30, "min"), q(1800, "s")])
    assert total.unit.symbol == "h"
    assert total.value == pytest.approx(2.0)
'''),
        ),
    ),
    Commit(
        "Bump pytest from 8.0.0 to 8.1.1\n\n"
        "Bumps [pytest](https://github.com/pytest-dev/pytest) from 8.0.0 to 8.1.1.\n"
        "- [Release notes](https://github.com/pytest-dev/pytest/releases)\n"
        "- [Changelog](https://github.com/pytest-dev/pytest/blob/main/CHANGELOG.rst)\n"
        "- [Commits](https://github.com/pytest-dev/pytest/compare/8.0.0...8.1.1)\n\n"
        "---\n"
        "updated-dependencies:\n"
        "- dependency-name: pytest\n"
        "  dependency-type: direct:development\n"
        "  update-type: version-update:semver-minor\n"
        "...\n\n"
        "Signed-off-by: dependabot[bot] <support@github.com>",
        DEPENDABOT,
        (
            replace("requirements-dev.txt", r'''
pytest==8.0.0
''', r'''
pytest==8.1.1
'''),
        ),
        kind="bot",
    ),
]


MORE_UNITS_AND_HUMANIZE = [
    Commit(
        "Add temperature units with offset conversion\n\n"
        "Celsius and Fahrenheit do not start at the base unit's zero, so a unit\n"
        "now carries an offset added after scaling: K = value * factor + offset.",
        DANA,
        (
            replace(UNITS, r'''
    """A unit: its symbol, the dimension it measures and its size in base units."""
''', r'''
    """A unit: its symbol, the dimension it measures and its size in base units.

    ``offset`` is added after scaling, for scales whose zero is not the base unit's zero.
    """
'''),
            insert_after(UNITS, r'''
    prefixable: bool = False
''', r'''
    offset: float = 0.0
'''),
            insert_after(UNITS, r'''
        Unit("h", "time", 3600.0),
''', r'''
        Unit("K", "temperature", 1.0),
        Unit("degC", "temperature", 1.0, offset=273.15),
        Unit("degF", "temperature", 5 / 9, offset=273.15 - 32 * 5 / 9),
'''),
            replace(QUANTITY, r'''
        return self.value * self.unit.factor
''', r'''
        return self.value * self.unit.factor + self.unit.offset
'''),
            replace(QUANTITY, r'''
        return Quantity(self._base() / target.factor, target)
''', r'''
        return Quantity((self._base() - target.offset) / target.factor, target)
'''),
            append(TEST_QUANTITY, r'''
def test_converts_between_celsius_and_fahrenheit():
    assert q(100, "degC").to("degF").value == pytest.approx(212)
    assert q(-40, "degF").to("degC").value == pytest.approx(-40)


def test_converts_kelvin_to_celsius():
    assert q(0, "K").to("degC").value == pytest.approx(-273.15)
'''),
        ),
    ),
    Commit(
        "Parse the degree sign in temperature units\n\n"
        'Accept "°C" and "°F" as spellings of degC and degF.',
        TOMAS,
        (
            insert_after(UNITS, r'''
    ]
}
''', r'''

_ALIASES = {"°C": "degC", "°F": "degF"}
'''),
            insert_after(UNITS, r'''
    """Return the unit registered under ``symbol``, possibly with an SI prefix."""
''', r'''
    symbol = _ALIASES.get(symbol, symbol)
'''),
            replace(PARSER, r'''
# [^\W\d_] is any letter, the micro sign included.
_SYMBOL = r"[^\W\d_]+"
''', r'''
# Letters ([^\W\d_], the micro sign included), maybe after a degree sign.
_SYMBOL = r"°?[^\W\d_]+"
'''),
            append(TEST_PARSER, r'''
def test_parses_the_degree_sign():
    assert parser.parse_quantity("21.5 °C").unit == units.get_unit("degC")
'''),
        ),
    ),
    Commit(
        "Add speed units written with a slash",
        DANA,
        (
            insert_after(UNITS, r'''
        Unit("degF", "temperature", 5 / 9, offset=273.15 - 32 * 5 / 9),
''', r'''
        Unit("m/s", "speed", 1.0),
        Unit("km/h", "speed", 1000 / 3600),
'''),
            replace(PARSER, r'''
_SYMBOL = r"°?[^\W\d_]+"
''', r'''
_SYMBOL = r"°?[^\W\d_]+(?:/[^\W\d_]+)?"
'''),
            append(TEST_PARSER, r'''
def test_parses_units_with_a_slash():
    assert parser.parse_quantity("90 km/h").to("m/s").value == pytest.approx(25)
'''),
        ),
    ),
    Commit(
        "Support thousands separators in quantity values",
        PRIYA,
        (
            replace(PARSER, r'''
_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
''', r'''
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
'''),
            replace(PARSER, r'''
    return Quantity(float(value), get_unit(symbol))
''', r'''
    return Quantity(float(value.replace(",", "")), get_unit(symbol))
'''),
            append(TEST_PARSER, r'''
def test_parses_thousands_separators():
    assert parser.parse_quantity("1,250,000 m").value == 1_250_000


def test_rejects_misplaced_separators():
    with pytest.raises(ValueError):
        parser.parse_quantity("12,50 m")
'''),
        ),
    ),
    Commit(
        "Raise a clear error for empty quantity text",
        TOMAS,
        (
            replace(PARSER, r'''
    match = _QUANTITY.fullmatch(text.strip())
''', r'''
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty quantity text")
    match = _QUANTITY.fullmatch(stripped)
'''),
            append(TEST_PARSER, r'''
@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_reports_empty_text(text):
    with pytest.raises(ValueError, match="empty"):
        parser.parse_quantity(text)
'''),
        ),
    ),
    Commit(
        "Add humanize to express a quantity in a readable unit",
        DANA,
        (
            replace(FORMATTING, r'''
# TODO: pick a readable prefix automatically (1500 m -> "1.5 km").
''', r'''
# Units tried from smallest to largest; humanize() keeps the largest giving a value >= 1.
_LADDERS = {
    "length": ["nm", "µm", "mm", "m", "km"],
    "mass": ["µg", "mg", "g", "kg"],
    "time": ["ms", "s", "min", "h"],
}


def humanize(quantity: Quantity, precision: int = 2) -> str:
    """Format ``quantity`` in the most readable unit of its dimension: 1500 m is "1.5 km".

    Trailing zeros are dropped. Dimensions without a ladder are formatted as they are.
    """
    ladder = _LADDERS.get(quantity.unit.dimension)
    if ladder is None:
        return format_quantity(quantity, precision)
    best = quantity.to(ladder[0])
    for symbol in ladder[1:]:
        candidate = quantity.to(symbol)
        if candidate.value < 1:
            break
        best = candidate
    number = f"{best.value:.{precision}f}".rstrip("0").rstrip(".")
    return f"{number} {best.unit.symbol}"
'''),
            replace(INIT, r'''
from metrica.formatting import format_quantity
''', r'''
from metrica.formatting import format_quantity, humanize
'''),
            insert_after(INIT, r'''
    "get_unit",
''', r'''
    "humanize",
'''),
            append(TEST_FORMATTING, r'''
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1500 m", "1.5 km"),
        ("0.25 m", "250 mm"),
        ("2500 g", "2.5 kg"),
        ("90 min", "1.5 h"),
        ("42 s", "42 s"),
    ],
)
def test_humanize_picks_a_readable_unit(text, expected):
    assert formatting.humanize(parser.parse_quantity(text)) == expected


def test_humanize_leaves_other_dimensions_as_they_are():
    assert formatting.humanize(parser.parse_quantity("20 degC")) == "20.00 degC"
'''),
        ),
    ),
    Commit(
        "Handle negative values when humanizing quantities",
        PRIYA,
        (
            replace(FORMATTING, r'''
# Units tried from smallest to largest; humanize() keeps the largest giving a value >= 1.
''', r'''
# Units tried from smallest to largest; humanize() keeps the largest giving |value| >= 1.
'''),
            replace(FORMATTING, r'''
        if candidate.value < 1:
''', r'''
        if abs(candidate.value) < 1:
'''),
            append(TEST_FORMATTING, r'''
def test_humanize_handles_negative_values():
    assert formatting.humanize(parser.parse_quantity("-1500 m")) == "-1.5 km"
'''),
        ),
    ),
    Commit(
        "Keep whole numbers intact when humanizing without decimals\n\n"
        "With precision=0 there is no decimal point, so stripping trailing zeros\n"
        'turned 1500 h into "15 h".',
        TOMAS,
        (
            replace(FORMATTING, r'''
    number = f"{best.value:.{precision}f}".rstrip("0").rstrip(".")
''', r'''
    number = f"{best.value:.{precision}f}"
    if "." in number:
        number = number.rstrip("0").rstrip(".")
'''),
            append(TEST_FORMATTING, r'''
def test_humanize_without_decimals_keeps_whole_numbers():
    assert formatting.humanize(parser.parse_quantity("1500 h"), precision=0) == "1500 h"
'''),
        ),
    ),
    Commit(
        "Add area units with squared symbols",
        PRIYA,
        (
            insert_after(UNITS, r'''
        Unit("km/h", "speed", 1000 / 3600),
''', r'''
        Unit("m²", "area", 1.0),
        Unit("cm²", "area", 1e-4),
        Unit("km²", "area", 1e6),
        Unit("ha", "area", 1e4),
'''),
            append(TEST_UNITS, r'''
def test_area_units():
    assert units.get_unit("km²").factor == 1e6
    assert units.get_unit("ha").dimension == "area"
'''),
            append(TEST_PARSER, r'''
def test_parses_squared_symbols():
    assert parser.parse_quantity("2.5 km²").to("ha").value == pytest.approx(250)
'''),
        ),
        branch="area-units",
    ),
    Commit(
        "Accept caret exponents in squared unit symbols\n\n"
        "Plain-text sources write m^2 where they mean m².",
        TOMAS,
        (
            insert_after(UNITS, r'''
    symbol = _ALIASES.get(symbol, symbol)
''', r'''
    symbol = symbol.replace("^2", "²")
'''),
            replace(PARSER, r'''
_SYMBOL = r"°?[^\W\d_]+(?:/[^\W\d_]+)?"
''', r'''
_SYMBOL = r"°?[^\W\d_]+(?:\^2)?(?:/[^\W\d_]+)?"
'''),
            append(TEST_UNITS, r'''
def test_caret_exponent_means_squared():
    assert units.get_unit("km^2") == units.get_unit("km²")
'''),
            append(TEST_PARSER, r'''
def test_parses_caret_exponents():
    assert parser.parse_quantity("40 m^2").unit.symbol == "m²"
'''),
        ),
        branch="area-units",
    ),
    Merge("area-units", "Merge branch 'area-units'", DANA),
]


NAMES_AND_IMPERIAL = [
    Commit(
        "Accept spelled-out unit names",
        DANA,
        (
            insert_after(UNITS, r'''
_ALIASES = {"°C": "degC", "°F": "degF"}
''', r'''

# Spelled-out names, in the singular; a plural "s" is dropped before the lookup.
_NAMES = {
    "metre": "m",
    "meter": "m",
    "kilometre": "km",
    "kilometer": "km",
    "gram": "g",
    "kilogram": "kg",
    "second": "s",
    "minute": "min",
    "hour": "h",
    "kelvin": "K",
    "celsius": "degC",
    "fahrenheit": "degF",
    "hectare": "ha",
}
'''),
            replace(UNITS, r'''
    """Return the unit registered under ``symbol``, possibly with an SI prefix."""
    symbol = _ALIASES.get(symbol, symbol)
''', r'''
    """Return the unit for a symbol or a spelled-out name, possibly with an SI prefix."""
    symbol = _NAMES.get(symbol.lower().removesuffix("s"), symbol)
    symbol = _ALIASES.get(symbol, symbol)
'''),
            append(TEST_UNITS, r'''
@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("metre", "m"),
        ("meters", "m"),
        ("Hours", "h"),
        ("kilograms", "kg"),
        ("hectares", "ha"),
    ],
)
def test_resolves_spelled_out_names(name, symbol):
    assert units.get_unit(name) == units.get_unit(symbol)
'''),
            append(TEST_PARSER, r'''
def test_parses_spelled_out_names():
    assert parser.parse_quantity("3 metres").to("cm").value == pytest.approx(300)
'''),
        ),
    ),
    Commit(
        "Resolve unit names that end in s\n\n"
        '"celsius" lost its final "s" before the lookup and was reported as an\n'
        "unknown unit.",
        PRIYA,
        (
            replace(UNITS, r'''
    symbol = _NAMES.get(symbol.lower().removesuffix("s"), symbol)
''', r'''
    name = symbol.lower()
    if name not in _NAMES:
        name = name.removesuffix("s")
    symbol = _NAMES.get(name, symbol)
'''),
            append(TEST_UNITS, r'''
def test_resolves_names_ending_in_s():
    assert units.get_unit("Celsius") == units.get_unit("degC")
'''),
        ),
    ),
    Commit(
        "Split unit lookup into name and prefix helpers",
        TOMAS,
        (
            replace(UNITS, r'''
def get_unit(symbol: str) -> Unit:
    """Return the unit for a symbol or a spelled-out name, possibly with an SI prefix."""
    name = symbol.lower()
    if name not in _NAMES:
        name = name.removesuffix("s")
    symbol = _NAMES.get(name, symbol)
    symbol = _ALIASES.get(symbol, symbol)
    symbol = symbol.replace("^2", "²")
    if symbol in _UNITS:
        return _UNITS[symbol]
    if symbol[:1] in _MICRO_ALIASES:
        symbol = "µ" + symbol[1:]
    for prefix, scale in _PREFIXES.items():
        base = _UNITS.get(symbol[len(prefix) :])
        if symbol.startswith(prefix) and base is not None and base.prefixable:
            return replace(base, symbol=symbol, factor=scale * base.factor, prefixable=False)
    raise UnknownUnitError(f"unknown unit: {symbol!r}")
''', r'''
def _symbol_for(text: str) -> str:
    """Return the symbol ``text`` stands for: a unit name, singular or plural, or an alias."""
    name = text.lower()
    if name not in _NAMES:
        name = name.removesuffix("s")
    symbol = _NAMES.get(name, text)
    return _ALIASES.get(symbol, symbol).replace("^2", "²")


def _with_prefix(symbol: str) -> Unit | None:
    """Read ``symbol`` as an SI prefix followed by a prefixable unit, if it is one."""
    if symbol[:1] in _MICRO_ALIASES:
        symbol = "µ" + symbol[1:]
    for prefix, scale in _PREFIXES.items():
        base = _UNITS.get(symbol[len(prefix) :])
        if symbol.startswith(prefix) and base is not None and base.prefixable:
            return replace(base, symbol=symbol, factor=scale * base.factor, prefixable=False)
    return None


def get_unit(text: str) -> Unit:
    """Return the unit for a symbol or a spelled-out name, possibly with an SI prefix."""
    symbol = _symbol_for(text)
    unit = _UNITS.get(symbol) or _with_prefix(symbol)
    if unit is None:
        raise UnknownUnitError(f"unknown unit: {text!r}")
    return unit
'''),
        ),
        kind="refactor",
    ),
    Commit(
        "Add imperial and US customary units\n\n"
        "Registers the imperial and US customary lengths, areas, volumes, masses\n"
        "and speeds, the Rankine scale and the litre, with their spelled-out\n"
        "names, and checks every factor against its published definition.",
        DANA,
        (
            insert_after(UNITS, r'''
        Unit("ha", "area", 1e4),
''', r'''
        Unit("L", "volume", 1e-3, prefixable=True),
'''),
            insert_after(UNITS, r'''
    "hectare": "ha",
''', r'''
    "litre": "L",
    "liter": "L",
'''),
            append(UNITS, r'''
def register(unit: Unit, *names: str) -> None:
    """Add ``unit`` to the registry, together with spelled-out ``names`` for it."""
    if unit.symbol in _UNITS:
        raise ValueError(f"unit already registered: {unit.symbol!r}")
    _UNITS[unit.symbol] = unit
    for name in names:
        _NAMES[name] = unit.symbol
'''),
            replace(INIT, r'''
from metrica.formatting import format_quantity, humanize
''', r'''
from metrica import imperial  # noqa: F401  (importing it registers the units)
from metrica.formatting import format_quantity, humanize
'''),
            write(IMPERIAL, r'''
"""Imperial and US customary units, registered when the package is imported.

Every factor derives from the international definitions of the yard and the pound
(1959), the US gallon (231 cubic inches) and the imperial gallon (4.54609 litres).
"""

from __future__ import annotations

from metrica.units import Unit, register

INCH = 0.0254
FOOT = 12 * INCH
MILE = 5280 * FOOT
POUND = 0.45359237
US_GALLON = 231 * INCH**3
IMPERIAL_GALLON = 4.54609e-3
STANDARD_GRAVITY = 9.80665

# Lengths, in metres.
register(Unit("in", "length", INCH), "inch", "inches")
register(Unit("ft", "length", FOOT), "foot", "feet")
register(Unit("yd", "length", 3 * FOOT), "yard")
register(Unit("mi", "length", MILE), "mile")
register(Unit("mil", "length", INCH / 1000), "thou")
register(Unit("hh", "length", 4 * INCH), "hand")
register(Unit("ch", "length", 66 * FOOT), "chain")
register(Unit("fur", "length", 660 * FOOT), "furlong")
register(Unit("lea", "length", 3 * MILE), "league")
register(Unit("ftm", "length", 6 * FOOT), "fathom")
register(Unit("rd", "length", 16.5 * FOOT), "rod")
register(Unit("li", "length", 0.66 * FOOT), "link")
register(Unit("nmi", "length", 1852.0))
register(Unit("cbl", "length", 185.2), "cable")

# Areas, in square metres.
register(Unit("in²", "area", INCH**2))
register(Unit("ft²", "area", FOOT**2))
register(Unit("yd²", "area", (3 * FOOT) ** 2))
register(Unit("mi²", "area", MILE**2))
register(Unit("ac", "area", 43560 * FOOT**2), "acre")
register(Unit("ro", "area", 10890 * FOOT**2), "rood")
register(Unit("perch", "area", (16.5 * FOOT) ** 2))

# Volumes, in cubic metres.
register(Unit("gal", "volume", US_GALLON), "gallon")
register(Unit("qt", "volume", US_GALLON / 4), "quart")
register(Unit("pt", "volume", US_GALLON / 8), "pint")
register(Unit("cup", "volume", US_GALLON / 16))
register(Unit("floz", "volume", US_GALLON / 128))
register(Unit("tbsp", "volume", US_GALLON / 256), "tablespoon")
register(Unit("tsp", "volume", US_GALLON / 768), "teaspoon")
register(Unit("bbl", "volume", 42 * US_GALLON), "barrel")
register(Unit("bu", "volume", 2150.42 * INCH**3), "bushel")
register(Unit("pk", "volume", 2150.42 * INCH**3 / 4), "peck")
register(Unit("impgal", "volume", IMPERIAL_GALLON))
register(Unit("impqt", "volume", IMPERIAL_GALLON / 4))
register(Unit("imppt", "volume", IMPERIAL_GALLON / 8))
register(Unit("impfloz", "volume", IMPERIAL_GALLON / 160))

# Masses, in kilograms.
register(Unit("gr", "mass", POUND / 7000), "grain")
register(Unit("dr", "mass", POUND / 256), "dram")
register(Unit("oz", "mass", POUND / 16), "ounce")
register(Unit("lb", "mass", POUND), "pound")
register(Unit("st", "mass", 14 * POUND), "stone")
register(Unit("qr", "mass", 28 * POUND), "quarter")
register(Unit("cwt", "mass", 100 * POUND), "hundredweight")
register(Unit("longcwt", "mass", 112 * POUND))
register(Unit("ton", "mass", 2000 * POUND))
register(Unit("LT", "mass", 2240 * POUND))
register(Unit("ozt", "mass", 480 * POUND / 7000))
register(Unit("lbt", "mass", 5760 * POUND / 7000))
register(Unit("slug", "mass", POUND * STANDARD_GRAVITY / FOOT))

# Speeds, in metres per second.
register(Unit("mph", "speed", MILE / 3600))
register(Unit("kn", "speed", 1852 / 3600), "knot")
register(Unit("ft/s", "speed", FOOT))

# Temperature: the Rankine scale is Fahrenheit-sized degrees from absolute zero.
register(Unit("degR", "temperature", 5 / 9), "rankine")
'''),
            write(TEST_IMPERIAL, r'''
import pytest

from metrica import parser, units


@pytest.mark.parametrize(
    ("text", "target", "expected"),
    [
        # lengths
        ("1 in", "mm", 25.4),
        ("1 ft", "m", 0.3048),
        ("1 yd", "m", 0.9144),
        ("1 ft", "in", 12),
        ("1 yd", "ft", 3),
        ("1 mi", "yd", 1760),
        ("1 mi", "km", 1.609344),
        ("1 mil", "mm", 0.0254),
        ("1 hh", "in", 4),
        ("1 ch", "yd", 22),
        ("1 fur", "ch", 10),
        ("1 lea", "mi", 3),
        ("1 ftm", "ft", 6),
        ("1 rd", "yd", 5.5),
        ("1 li", "ch", 0.01),
        ("1 nmi", "m", 1852),
        ("1 cbl", "nmi", 0.1),
        # areas
        ("1 in²", "cm²", 6.4516),
        ("1 ft²", "in²", 144),
        ("1 yd²", "ft²", 9),
        ("1 mi²", "ac", 640),
        ("1 mi²", "km²", 2.589988110336),
        ("1 ac", "m²", 4046.8564224),
        ("1 ac", "ro", 4),
        ("1 ro", "perch", 40),
        ("1 ha", "ac", 2.4710538146716536),
        # volumes
        ("1 L", "mL", 1000),
        ("1 gal", "L", 3.785411784),
        ("1 gal", "qt", 4),
        ("1 qt", "pt", 2),
        ("1 pt", "cup", 2),
        ("1 cup", "floz", 8),
        ("1 floz", "tbsp", 2),
        ("1 tbsp", "tsp", 3),
        ("1 floz", "mL", 29.5735295625),
        ("1 tsp", "mL", 4.92892159375),
        ("1 bbl", "gal", 42),
        ("1 bu", "pk", 4),
        ("1 pk", "L", 8.80976754172),
        ("1 impgal", "L", 4.54609),
        ("1 impgal", "impqt", 4),
        ("1 impqt", "imppt", 2),
        ("1 imppt", "impfloz", 20),
        ("1 impfloz", "mL", 28.4130625),
        # masses
        ("1 lb", "kg", 0.45359237),
        ("1 lb", "oz", 16),
        ("1 oz", "dr", 16),
        ("1 oz", "g", 28.349523125),
        ("1 lb", "gr", 7000),
        ("1 st", "lb", 14),
        ("1 st", "kg", 6.35029318),
        ("1 qr", "st", 2),
        ("1 cwt", "lb", 100),
        ("1 longcwt", "lb", 112),
        ("1 ton", "lb", 2000),
        ("1 ton", "kg", 907.18474),
        ("1 LT", "lb", 2240),
        ("1 LT", "kg", 1016.0469088),
        ("1 lbt", "ozt", 12),
        ("1 ozt", "g", 31.1034768),
        ("1 slug", "kg", 14.593902937),
        # speeds
        ("1 mph", "km/h", 1.609344),
        ("60 mph", "ft/s", 88),
        ("1 kn", "km/h", 1.852),
        ("1 kn", "m/s", 0.5144444),
        # temperatures
        ("0 degR", "K", 0),
        ("491.67 degR", "degC", 0),
        ("0 degF", "degR", 459.67),
    ],
)
def test_converts_imperial_units(text, target, expected):
    assert parser.parse_quantity(text).to(target).value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("inches", "in"),
        ("feet", "ft"),
        ("Miles", "mi"),
        ("acre", "ac"),
        ("gallons", "gal"),
        ("pounds", "lb"),
        ("stone", "st"),
        ("knots", "kn"),
        ("Rankine", "degR"),
        ("litres", "L"),
    ],
)
def test_resolves_imperial_names(name, symbol):
    assert units.get_unit(name) == units.get_unit(symbol)


def test_parses_imperial_names():
    assert parser.parse_quantity("6 feet").to("m").value == pytest.approx(1.8288)


def test_imperial_units_do_not_take_prefixes():
    with pytest.raises(units.UnknownUnitError):
        units.get_unit("kft")


def test_registering_a_symbol_twice_fails():
    with pytest.raises(ValueError, match="already registered"):
        units.register(units.Unit("ft", "length", 0.3048))
'''),
        ),
        kind="too-many-lines",
    ),
    Commit(
        "Add a convert helper for plain numbers",
        TOMAS,
        (
            append(QUANTITY, r'''
def convert(value: float, source: str, target: str) -> float:
    """Convert ``value`` from the unit ``source`` to the unit ``target``."""
    return Quantity(value, get_unit(source)).to(target).value
'''),
            replace(INIT, r'''
from metrica.quantity import Quantity
''', r'''
from metrica.quantity import Quantity, convert
'''),
            insert_after(INIT, r'''
    "UnknownUnitError",
''', r'''
    "convert",
'''),
            append(TEST_QUANTITY, r'''
def test_converts_plain_numbers():
    assert quantity.convert(5, "km", "m") == 5000
    assert quantity.convert(212, "degF", "degC") == pytest.approx(100)
'''),
        ),
    ),
    Commit(
        "Make str() of a quantity read like the text it came from",
        PRIYA,
        (
            insert_after(QUANTITY, r'''
        return Quantity((self._base() - target.offset) / target.factor, target)
''', r'''

    def __str__(self) -> str:
        return f"{self.value:g} {self.unit.symbol}"

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(self)
        return f"{self.value:{spec}} {self.unit.symbol}"
'''),
            append(TEST_QUANTITY, r'''
def test_str_reads_like_the_parsed_text():
    assert str(q(12.5, "km")) == "12.5 km"


def test_format_spec_applies_to_the_value():
    assert f"{q(2, 'h'):.1f}" == "2.0 h"
'''),
        ),
    ),
    Commit(
        "Release 0.2.0",
        DANA,
        (
            replace("pyproject.toml", r'''
version = "0.1.0"
''', r'''
version = "0.2.0"
'''),
            replace(INIT, r'''
__version__ = "0.1.0"
''', r'''
__version__ = "0.2.0"
'''),
            write("CHANGELOG.md", r'''
# Changelog

## 0.2.0

- Arithmetic, comparison and hashing of quantities; `sum()` works on lists of them.
- SI prefixes, temperatures, speeds, areas, imperial and US customary units.
- Spelled-out unit names, the micro and degree signs, thousands separators.
- `format_quantity`, `humanize` and `convert`.

## 0.1.0

- First release: `parse_quantity` and `Quantity.to`.
'''),
        ),
        kind="message",
    ),
    Commit(
        "Reject non-finite values when creating quantities\n\n"
        'parse_quantity("1e999 m") gave an infinite length, and the first\n'
        "subtraction involving it turned into NaN far from the input.",
        DANA,
        (
            insert_after(QUANTITY, r'''
    unit: Unit
''', r'''

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"quantity value must be finite, got {self.value!r}")
'''),
            append(TEST_QUANTITY, r'''
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_rejects_non_finite_values(value):
    with pytest.raises(ValueError, match="finite"):
        q(value, "m")
'''),
            append(TEST_PARSER, r'''
def test_rejects_overflowing_values():
    with pytest.raises(ValueError, match="finite"):
        parser.parse_quantity("1e999 m")
'''),
        ),
    ),
]


HISTORY: tuple[Commit | Merge, ...] = (
    SKELETON,
    *PARSER_BASICS,
    *ARITHMETIC_AND_PREFIXES,
    *COMPARISON_AND_FORMATTING,
    *MORE_UNITS_AND_HUMANIZE,
    *NAMES_AND_IMPERIAL,
)
# fmt: on
