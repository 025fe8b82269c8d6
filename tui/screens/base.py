"""What every dashboard screen shares: header, daemon banner, footer, and loading its
data in a worker thread (never on the UI thread), again on each refresh."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header

from appliance.errors import ForgeError
from appliance.store import sqlite_module
from tui.widgets.banner import AlertBanner, DaemonBanner


def read_errors() -> tuple[type[BaseException], ...]:
    """What a read can fail with that the operator should see, not a traceback."""
    return (ForgeError, sqlite_module().Error, OSError)


class ForgeScreen(Screen):
    """A screen whose `fetch` runs in a thread and whose `show` puts it on screen.

    `selection()` (on the UI thread) says what the operator has picked (a package, a
    stage, a job), so one fetch reads both the list and the detail of the pick."""

    TITLE = "Forge"

    def __init__(self) -> None:
        super().__init__()
        self._loading = False
        self._again = False

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield DaemonBanner()
        yield AlertBanner()
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        raise NotImplementedError

    def on_mount(self) -> None:
        self.title = self.heading()

    def heading(self) -> str:
        return self.TITLE

    def on_screen_resume(self) -> None:
        self.reload()

    def reload(self) -> None:
        if self._loading:
            self._again = True  # once this read is on screen, read again
            return
        self._loading, self._again = True, False
        selection = self.selection()
        self.run_worker(
            lambda: self._load(selection), thread=True, group="load", name=f"load {self.TITLE}"
        )

    def _load(self, selection: Any) -> None:
        try:
            data = self.fetch(selection)
        except read_errors() as exc:
            self.app.call_from_thread(self._failed, exc)
            return
        self.app.call_from_thread(self._show, data)

    def _failed(self, exc: BaseException) -> None:
        self._loading = False
        self.app.report(exc)

    def _show(self, data: Any) -> None:
        self._loading = False
        if self.is_attached:
            self.show(data)
        if self._again:
            self.reload()

    def selection(self) -> Any:
        return None

    def fetch(self, selection: Any) -> Any:
        """Runs in a worker thread: read what the screen shows (through self.app.reader)."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Runs on the UI thread with what fetch returned."""
        raise NotImplementedError
