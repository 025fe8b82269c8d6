"""`forge tui`: the operator's dashboard. The App wires the screens together, keeps the
daemon's state for the banner, refreshes the screen in view on a timer, and runs what
the operator asks for in worker threads; the screens live in `tui.screens`, the panels
in `tui.widgets`, the queries in `tui.data`, the actions in `tui.steering`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from appliance.config import Config
from appliance.errors import ForgeError
from appliance.store import open_db
from tui.data import Reader
from tui.screens.adapters import AdaptersScreen
from tui.screens.base import ForgeScreen, read_errors
from tui.screens.campaigns import CampaignsScreen
from tui.screens.jobs import JobsScreen
from tui.screens.overview import OverviewScreen
from tui.screens.packages import PackagesScreen

REFRESH_S = 2.0
SCREENS = {  # mode -> (key, title)
    "overview": ("1", "Overview"),
    "packages": ("2", "Packages"),
    "campaigns": ("3", "Campaigns"),
    "adapters": ("4", "Adapters"),
    "jobs": ("5", "Jobs"),
}


class ForgeApp(App):
    CSS_PATH = "forge.tcss"
    TITLE = "Forge"
    MODES = {
        "overview": OverviewScreen,
        "packages": PackagesScreen,
        "campaigns": CampaignsScreen,
        "adapters": AdaptersScreen,
        "jobs": JobsScreen,
    }
    DEFAULT_MODE = "overview"
    BINDINGS = [
        *(Binding(key, f"switch_mode('{mode}')", title) for mode, (key, title) in SCREENS.items()),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "quit", "Quit"),
    ]

    # None until the first probe; the banner shows while it is False.
    daemon_running: reactive[bool | None] = reactive(None)
    # What the raised (not acknowledged) alerts say; the alert banner shows while any is.
    raised_alerts: reactive[tuple[str, ...]] = reactive(())

    def __init__(
        self, config: Config, reader: Reader | None = None, refresh_s: float | None = REFRESH_S
    ) -> None:
        super().__init__()
        self.config = config
        self.reader = reader or Reader(config)
        self.refresh_s = refresh_s

    def on_mount(self) -> None:
        self.sub_title = "air-gapped appliance"
        self.probe_daemon()
        if self.refresh_s:
            self.set_interval(self.refresh_s, self.tick)

    def tick(self) -> None:
        self.probe_daemon()
        if isinstance(self.screen, ForgeScreen):
            self.screen.reload()

    def probe_daemon(self) -> None:
        def probe() -> None:
            running = self.reader.daemon_running()
            self.call_from_thread(setattr, self, "daemon_running", running)
            try:
                raised = self.reader.raised_alerts()
            except read_errors():  # the screens report a database they cannot read
                return
            self.call_from_thread(setattr, self, "raised_alerts", raised)

        self.run_worker(probe, thread=True, group="probe", exclusive=True, name="probe daemon")

    def action_refresh(self) -> None:
        self.tick()

    def report(self, exc: BaseException) -> None:
        """An error for the operator: a notification, never a traceback."""
        if isinstance(exc, ForgeError):
            message = exc.message + (f"\n→ {exc.hint}" if exc.hint else "")
        else:
            message = f"{type(exc).__name__}: {exc}"
        self.notify(message, title="Forge", severity="error", timeout=12)

    def steer(self, call: Callable[[Config], Any], done: Callable[[Any], str]) -> None:
        """Run an action (a `tui.steering` call) in a worker thread; say how it went."""

        def work() -> None:
            try:
                result = call(self.config)
            except read_errors() as exc:
                self.call_from_thread(self.report, exc)
                return
            self.call_from_thread(self._steered, done(result))

        self.run_worker(work, thread=True, group="steer", name="steer")

    def _steered(self, message: str) -> None:
        self.notify(message, title="Forge")
        self.tick()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for mode, (key, title) in SCREENS.items():
            yield SystemCommand(
                f"Go to {title}",
                f"the {title} screen (key {key})",
                lambda mode=mode: self.switch_mode(mode),
            )
        yield SystemCommand("Refresh", "read everything again now (key r)", self.tick)
        for binding in getattr(type(screen), "BINDINGS", []):
            if isinstance(binding, Binding) and binding.show and binding.description:
                yield SystemCommand(
                    binding.description,
                    f"on this screen (key {binding.key})",
                    lambda action=binding.action: screen.run_action(action),
                )
        yield from super().get_system_commands(screen)


def run(config: Config) -> None:
    """`forge tui`: the dashboard on this terminal until q."""
    open_db(config).close()  # a fresh FORGE_HOME gets its schema; the dashboard only reads
    ForgeApp(config).run()
