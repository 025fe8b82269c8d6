"""The banner shown on every screen while no daemon answers."""

from __future__ import annotations

from textual.widgets import Static

TEXT = (
    "forged is not running: showing the database read-only. Rollback and forced "
    "promote run here in the foreground; pause, cancel and queued jobs need the daemon."
)


class DaemonBanner(Static):
    """Hidden while forged answers its control socket (the app's `daemon_running`)."""

    def __init__(self) -> None:
        super().__init__(TEXT, id="daemon-banner")

    def on_mount(self) -> None:
        self.watch(self.app, "daemon_running", self._show, init=True)

    def _show(self, running: bool | None) -> None:
        self.display = running is False
