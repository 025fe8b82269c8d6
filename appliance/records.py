"""Records as JSON data: the one conversion behind every record's `to_dict`.

A record (a frozen dataclass) becomes a dict of plain values, which is what `--json`
prints, the daemon sends and the store keeps as JSON text. What a record leaves out,
reorders or computes is declared at its `to_dict`, in one call to `as_json`.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import PurePath


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
