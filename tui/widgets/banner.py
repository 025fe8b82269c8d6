"""The banners shown on every screen: while no daemon answers, and while alerts are raised."""

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


class AlertBanner(Static):
    """Shown while alerts are raised and not acknowledged (the app's `raised_alerts`)."""

    def __init__(self) -> None:
        super().__init__("", id="alert-banner")

    def on_mount(self) -> None:
        self.watch(self.app, "raised_alerts", self._show, init=True)

    def _show(self, raised: tuple[str, ...]) -> None:
        self.display = bool(raised)
        if raised:
            more = f" (and {len(raised) - 1} more)" if len(raised) > 1 else ""
            self.update(f"ALERT: {raised[0]}{more}. forge alerts; forge alerts ack ID")
