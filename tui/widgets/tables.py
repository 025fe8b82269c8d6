"""Refilling a DataTable on each refresh without losing the operator's place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from textual.widgets import DataTable


def fill(table: DataTable, rows: Iterable[tuple[str, Sequence]], select: str | None = None) -> None:
    """Replace the rows (each (key, cells)); the cursor goes to the row keyed `select`
    (what the screen read the detail of), else stays on the row with the same key. A
    table whose rows did not change is left alone."""
    rows = list(rows)
    keys = [k for k, _ in rows]
    if not _same(table, rows):
        current = selected_key(table)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if current in keys:
            table.move_cursor(row=keys.index(current), animate=False)
    if select is not None and select in keys and selected_key(table) != select:
        table.move_cursor(row=keys.index(select), animate=False)


def _same(table: DataTable, rows: list[tuple[str, Sequence]]) -> bool:
    if [k for k, _ in rows] != [k.value for k in table.rows]:
        return False
    return all(
        [str(c) for c in table.get_row(key)] == [str(c) for c in cells] for key, cells in rows
    )


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the cursor, or None for an empty table."""
    if not table.row_count:
        return None
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
