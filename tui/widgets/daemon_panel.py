"""Overview: the daemon's state, what it runs with, and when its schedules fire next."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tui.render import DASH, when

STATE_STYLES = {"running": "bold green", "paused": "bold yellow", "not running": "bold red"}


def state_of(daemon: dict) -> str:
    return daemon.get("state", "running") if daemon.get("running") else "not running"


class DaemonPanel(Static):
    def on_mount(self) -> None:
        self.border_title = "Daemon"

    def show(self, daemon: dict, serve: dict | None = None) -> None:
        state = state_of(daemon)
        head = Text.assemble(("forged ", "bold"), (state, STATE_STYLES[state]))
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="dim")
        facts.add_column()
        if daemon.get("running"):
            facts.add_row("pid", str(daemon.get("pid", DASH)))
            facts.add_row("since", when(daemon.get("since")))
            facts.add_row("heavy slots", str(daemon.get("heavy_slots", DASH)))
            for job, gpus in sorted((daemon.get("job_gpus") or {}).items()):
                facts.add_row(f"job #{job}", "GPU " + ", ".join(gpus))  # the GPUs it holds
            facts.add_row("campaign window", daemon.get("campaign_window") or "any time")
            for schedule, at in sorted((daemon.get("next_runs") or {}).items()):
                facts.add_row(f"next {schedule}", when(at) if at else "not scheduled")
        elif daemon.get("error"):
            facts.add_row("error", daemon["error"])
        else:
            facts.add_row("", "systemctl start forged (or run forged) to start it")
        if serve and serve.get("running"):  # forge serve, when it runs
            paused = serve.get("paused")
            facts.add_row("serve", f"paused: {paused}" if paused else f"serving {serve['url']}")
            facts.add_row("served", f"{serve['served']} ({serve['waiting']} waiting)")
        self.update(Group(head, facts))
