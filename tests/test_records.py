"""`as_json`, behind every record's `to_dict`: keys in declared (or given) order, computed
values and properties, and paths, dates, tuples and nested records made plain."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.records import as_json, from_row


@dataclass(frozen=True)
class Inner:
    a: int


@dataclass(frozen=True)
class Shown:
    b: int

    def to_dict(self) -> dict:
        return {"shown": self.b}


@dataclass(frozen=True)
class Outer:
    path: Path
    at: datetime
    items: tuple[Inner, ...]
    shown: Shown
    table: dict
    note: str = ""

    @property
    def count(self) -> int:
        return len(self.items)


RECORD = Outer(
    Path("/a/b"), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), (Inner(1), Inner(2)), Shown(3),
    {"k": (1, 2)},
)  # fmt: skip


def test_every_field_in_declared_order_made_plain():
    assert as_json(RECORD) == {
        "path": "/a/b",
        "at": "2026-01-02T03:04:05+00:00",
        "items": [{"a": 1}, {"a": 2}],
        "shown": {"shown": 3},
        "table": {"k": [1, 2]},
        "note": "",
    }
    json.dumps(as_json(RECORD))  # plain all the way down


def test_given_keys_choose_and_order_and_values_replace_or_add():
    data = as_json(RECORD, "note", "count", "path", path="elsewhere", extra=[Inner(4)])
    assert list(data) == ["note", "count", "path", "extra"]
    assert data == {"note": "", "count": 2, "path": "elsewhere", "extra": [{"a": 4}]}


def test_from_row_reads_columns_by_name_and_decodes_json():
    @dataclasses.dataclass(frozen=True)
    class Version:
        stage: str
        number: int
        metrics: dict
        note: str = "none"

    row = {"number": 3, "extra": "ignored", "metrics": '{"loss": 0.5}', "stage": "scope"}
    assert from_row(Version, row, json_columns=("metrics",)) == Version("scope", 3, {"loss": 0.5})
    assert from_row(Version, row, number=4).number == 4
    with pytest.raises(TypeError):  # a field with neither a column nor a default
        from_row(Version, {"stage": "scope"})
