"""SVG snapshots of every screen on the seeded demo (pytest-textual-snapshot; after a
deliberate change of the look: pytest tests/tui --snapshot-update, then look at them)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable
from tui_screenshots import settle

SIZE = (140, 44)


def keys(*pressed: str, focus: str | None = None):
    async def run_before(pilot) -> None:
        await settle(pilot)
        for key in pressed:
            if key == "focus" and focus:
                pilot.app.screen.query_one(focus, DataTable).focus()
                await settle(pilot)
                continue
            await pilot.press(key)
            await settle(pilot)

    return run_before


SCREENS = {
    "overview": keys("1"),
    "packages": keys("2"),
    "campaigns": keys("3"),
    "commit": keys("3", "focus", "enter", focus="#commit-table"),
    "adapters": keys("4"),
    "rollback_dialog": keys("4", "b"),
    "jobs": keys("5"),
}


@pytest.mark.parametrize("name", SCREENS)
def test_screen(name, make_app, snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=SCREENS[name])
