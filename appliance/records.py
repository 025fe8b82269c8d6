"""Records as JSON data and from database rows: the one conversion each way.

A record (a frozen dataclass) becomes a dict of plain values (`as_json`), which is what
`--json` prints, the daemon sends and the store keeps as JSON text. What a record leaves
out, reorders or computes is declared at its `to_dict`, in one call to `as_json`. A row
(read by column name) becomes a record by `from_row`, which decodes the columns that hold
JSON text.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import date
from pathlib import PurePath
from typing import Any, TypeVar

R = TypeVar("R")


def as_json(record: object, *keys: str, **values: object) -> dict:
    """`record` as a dict of plain values.

    Its keys are `keys` in that order (default: the record's fields, as declared), then
    the keys of `values` not among them. A key's value is `values[key]` when given, else
    the record's attribute of that name (a field or a property); either is made plain
    (see `plain`).
    """
    names = keys or tuple(f.name for f in dataclasses.fields(record))
    names += tuple(key for key in values if key not in names)
    return {
        name: plain(values[name] if name in values else getattr(record, name)) for name in names
    }


def plain(value: object) -> object:
    """`value` as JSON data: a record as its `to_dict()` (else `as_json`), a path as text,
    a date or time in ISO 8601, a tuple or list as a list, a dict with plain values;
    anything else as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return to_dict() if callable(to_dict) else as_json(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, date):  # datetime included
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def from_row(cls: type[R], row: Mapping[str, Any], *, json_columns: tuple[str, ...] = (),
             **values: object) -> R:  # fmt: skip
    """The record `cls` from a row read by column name: each field from the column of its
    name (JSON text decoded for `json_columns`), or from `values` when given there. A
    column the record has no field for is ignored; a field with no column and no value
    takes its default."""
    fields = {}
    columns = set(row.keys())  # a sqlite3.Row's `in` looks at its values, not its keys
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            fields[f.name] = values[f.name]
        elif f.name in columns:
            raw = row[f.name]
            fields[f.name] = json.loads(raw) if f.name in json_columns and raw is not None else raw
    return cls(**fields)
