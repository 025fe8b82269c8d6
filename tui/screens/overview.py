"""Overview: the daemon, the running job, the queue, failures, resources, the corpus."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical

from tui import steering
from tui.screens.base import ForgeScreen
from tui.widgets.corpus_panel import CorpusPanel
from tui.widgets.daemon_panel import DaemonPanel, state_of
from tui.widgets.jobs_panel import FailuresPanel, QueuePanel, RunningPanel
from tui.widgets.resources_panel import ResourcesPanel


class OverviewScreen(ForgeScreen):
    TITLE = "Overview"
    BINDINGS = [Binding("s", "pause", "Pause/resume daemon")]

    def body(self) -> ComposeResult:
        with Grid(id="overview"):
            with Vertical(classes="column"):
                yield DaemonPanel(id="daemon", classes="panel")
                yield RunningPanel(id="running", classes="panel")
                yield QueuePanel(id="queue", classes="panel")
                yield FailuresPanel(id="failures", classes="panel")
            with Vertical(classes="column"):
                yield ResourcesPanel(id="resources", classes="panel")
                yield CorpusPanel(id="corpus", classes="panel")

    def fetch(self, selection: None) -> dict:
        return self.app.reader.overview()

    def show(self, state: dict) -> None:
        self.state = state
        self.app.daemon_running = bool(state["daemon"].get("running"))
        self.query_one(DaemonPanel).show(state["daemon"], state.get("serve"))
        self.query_one(RunningPanel).show(state["jobs"]["running"])
        self.query_one(QueuePanel).show(state["jobs"]["queue"])
        self.query_one(FailuresPanel).show(state["jobs"]["recent_failures"])
        self.query_one(ResourcesPanel).show(state["resources"])
        self.query_one(CorpusPanel).show(state)

    def action_pause(self) -> None:
        state = getattr(self, "state", None)
        pause = state is not None and state_of(state["daemon"]) == "running"
        self.app.steer(
            lambda config: steering.pause(config, pause),
            done=lambda daemon: f"forged is {daemon['state']}",
        )
