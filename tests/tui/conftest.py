"""The dashboard on a seeded FORGE_HOME: real SQLite, the real schema, fixed times, and a
fixed resources snapshot (CPU, memory, disk, GPUs) so screens render the same each run."""

from __future__ import annotations

import pytest
from demo_home import seed
from tui_screenshots import fixed_gather

from tui.app import ForgeApp
from tui.data import Reader

SIZE = (140, 44)


@pytest.fixture
def demo(forge_home):
    """A FORGE_HOME holding the demo: packages, a quarantined one, campaigns, adapters,
    gate decisions, jobs and their logs."""
    seed(forge_home)
    return forge_home


@pytest.fixture
def make_app(demo):
    def make(refresh_s: float | None = None) -> ForgeApp:
        return ForgeApp(demo, Reader(demo, gather=fixed_gather), refresh_s=refresh_s)

    return make
