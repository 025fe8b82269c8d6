"""Adapters: per stage every version with the one in service marked, their gate metrics
with intervals, the primary metric across versions; promote and rollback, each behind a
confirmation that shows the gate report."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from appliance.evaluation.store import StoredDecision
from appliance.ops.actions import report_lines
from appliance.stages import STAGES
from tui import steering
from tui.data import AdapterRow, StageSummary, StageView
from tui.render import DASH, interval, rate, status, when
from tui.screens.base import ForgeScreen, read_errors
from tui.screens.confirm import ConfirmScreen
from tui.widgets.metric_chart import MetricChart
from tui.widgets.tables import fill, selected_key


@dataclass(frozen=True)
class AdaptersData:
    stages: tuple[StageSummary, ...]
    view: StageView


def gate_lines(decision: StoredDecision | None) -> list[str]:
    """A stored gate decision as `forge eval` prints it."""
    if decision is None:
        return []
    return report_lines(
        {
            "note": "",
            "examples": "?",
            **decision.report,
            "candidate": decision.candidate,
            "baseline": decision.baseline,
        }
    ) + [f"  decided {when(decision.created_at)}"]


def _primary(row: AdapterRow, metric: str) -> str:
    if row.decision is None:
        return DASH
    found = [m for m in row.decision.report.get("metrics", []) if m["metric"] == metric]
    if not found:
        return DASH
    return f"{rate(found[0]['candidate'])} {interval(found[0]['candidate_interval'])}"


def _kind(row: AdapterRow) -> str:
    """sft, dpo, or "dpo on v2": an SFT candidate and the DPO one built on it side by side."""
    if row.built_on and row.built_on != "base":
        return f"{row.kind} on v{row.built_on.rsplit('-v', 1)[-1]}"
    return row.kind


class AdaptersScreen(ForgeScreen):
    TITLE = "Adapters"
    BINDINGS = [
        Binding("b", "rollback", "Roll back stage"),
        Binding("p", "promote", "Promote (gate)"),
        Binding("f", "force_promote", "Force promote"),
    ]

    def body(self) -> ComposeResult:
        with Horizontal(id="adapters"):
            stages = DataTable(id="stage-table", cursor_type="row")
            stages.border_title = "Stages"
            stages.add_columns("stage", "in service", "versions")
            yield stages
            with Vertical(id="adapter-right"):
                versions = DataTable(id="version-table", cursor_type="row", zebra_stripes=True)
                versions.border_title = "Versions"
                versions.add_columns(
                    "",
                    "version",
                    "status",
                    "kind",
                    "servable",
                    "dataset",
                    "steps",
                    "loss",
                    "gate",
                    "primary metric [95% CI]",
                    "created",
                )
                yield versions
                yield MetricChart(id="chart", classes="panel")
                with VerticalScroll(id="gate-report", classes="panel") as box:
                    box.border_title = "Gate report"
                    yield Static(id="gate-text")

    def selection(self) -> str | None:
        return selected_key(self.query_one("#stage-table", DataTable))

    def fetch(self, stage: str | None) -> AdaptersData:
        reader = self.app.reader
        stages = reader.stages()
        if stage is None:  # first look: a stage with a version in service, else any versions
            stage = next(
                (s.stage for s in stages if s.active != "base"),
                next((s.stage for s in stages if s.versions), STAGES[0]),
            )
        return AdaptersData(stages, reader.stage(stage))

    def show(self, data: AdaptersData) -> None:
        shown = getattr(self, "data", None)
        new_stage = shown is None or shown.view.stage != data.view.stage
        self.data = data
        fill(
            self.query_one("#stage-table", DataTable),
            [
                (
                    s.stage,
                    (
                        s.stage,
                        Text(s.active, style="green" if s.active != "base" else ""),
                        f"{s.versions} ({s.candidates} new)" if s.candidates else s.versions,
                    ),
                )
                for s in data.stages
            ],
            select=data.view.stage,
        )
        view = data.view
        table = self.query_one("#version-table", DataTable)
        table.border_title = f"Versions of {view.stage} (in service: {view.active})"
        fill(
            table,
            [
                (
                    r.name,
                    (
                        Text("●", style="bold green") if r.status == "active" else "",
                        f"v{r.version}",
                        status(r.status),
                        _kind(r),
                        "yes" if r.servable else Text("no", style="red"),
                        r.dataset,
                        DASH if r.steps is None else str(r.steps),
                        rate(r.train_loss, 3),
                        status(r.decision.verdict) if r.decision else DASH,
                        _primary(r, view.primary_metric),
                        when(r.created_at),
                    ),
                )
                for r in view.versions
            ],
            # a stage newly picked opens on the version in service
            select=view.active if new_stage else None,
        )
        active = "base" if view.active_version is None else f"v{view.active_version}"
        self.query_one(MetricChart).show(view.primary_metric, view.chart, active)
        self._report()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "stage-table":
            shown = getattr(self, "data", None)
            if event.row_key is not None and (
                shown is None or shown.view.stage != event.row_key.value
            ):
                self.reload()
        elif event.data_table.id == "version-table":
            self._report()

    def _picked(self) -> AdapterRow | None:
        data = getattr(self, "data", None)
        key = selected_key(self.query_one("#version-table", DataTable))
        if data is None or key is None:
            return None
        return next((r for r in data.view.versions if r.name == key), None)

    def _report(self) -> None:
        row, text = self._picked(), self.query_one("#gate-text", Static)
        if row is None:
            text.update(Text("this stage has no adapter versions yet", style="dim"))
            return
        parts = [Text(row.name, style="bold")]
        if row.built_on:
            parts.append(Text(f"DPO on {row.built_on}: it continued that adapter, and was "
                              "held to it as the reference"))  # fmt: skip
        if not row.servable:
            parts.append(Text(f"not servable: {row.unservable_reason}", style="red"))
        lines = gate_lines(row.decision)
        parts.append(
            Text("\n".join(lines))
            if lines
            else Text("no gate decision with this version as the candidate", style="dim")
        )
        events = [e for e in self.data.view.history][:5]
        if events:
            parts.append(Text("\nrecent registry events", style="bold"))
            parts += [
                Text(
                    f"  {when(e.at)} {e.action} {e.from_name or ''} → {e.to_name}"
                    f"{' (forced)' if e.forced else ''}  {e.note}"
                )
                for e in events
            ]
        text.update(Group(*parts))

    # --- actions -----------------------------------------------------------------------

    def action_rollback(self) -> None:
        stage = self.selection()
        self.run_worker(lambda: self._prepare_rollback(stage), thread=True, group="prepare")

    def _prepare_rollback(self, stage: str) -> None:
        reader = self.app.reader
        try:
            before, after = reader.rollback_preview(stage)
            lines = []
            for name, why in ((before, "in service now"), (after, "in service after the rollback")):
                if name == "base":
                    continue
                decision = reader.decision_for(stage, name)
                lines += [f"{name} ({why}):", *(gate_lines(decision) or ["  no gate decision"])]
        except read_errors() as exc:
            self.app.call_from_thread(self.app.report, exc)
            return
        question = f"Roll back {stage}: take {before} out of service and put {after} back?"
        self.app.call_from_thread(
            self.app.push_screen,
            ConfirmScreen(f"Roll back {stage}", question, lines, "Roll back"),
            lambda yes: yes and self._steer_rollback(stage),
        )

    def _steer_rollback(self, stage: str) -> None:
        self.app.steer(
            lambda config: steering.rollback(config, stage),
            done=lambda r: f"{r['stage']}: {r['from']} → {r['to']} (via {r['via']})",
        )

    def action_promote(self) -> None:
        self._confirm_promote(forced=False)

    def action_force_promote(self) -> None:
        self._confirm_promote(forced=True)

    def _confirm_promote(self, forced: bool) -> None:
        row = self._picked()
        if row is None:
            self.app.notify("pick a version first", severity="warning")
            return
        if row.status == "active":
            self.app.notify(f"{row.name} is already in service", severity="warning")
            return
        stage, version = self.data.view.stage, row.version
        if forced:
            question = (
                f"Put {row.name} in service now, skipping the gate? The promotion "
                "is recorded as forced."
            )
        elif self.app.daemon_running:
            question = (
                f"Queue a promote job for {row.name}: forged evaluates it against "
                f"{self.data.view.active} and promotes it only if the gate agrees."
            )
        else:
            question = (
                f"Evaluate {row.name} against {self.data.view.active} here (no daemon: "
                "this loads the model and takes a while) and promote it only if the "
                "gate agrees?"
            )
        lines = ["newest gate decision:", *gate_lines(row.decision)] if row.decision else []

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            if forced:
                self.app.steer(
                    lambda config: steering.force_promote(config, stage, version),
                    done=lambda r: f"{r['active']} in service (forced, via {r['via']})",
                )
            else:
                self.app.notify(f"promoting {row.name} through the gate…")
                self.app.steer(
                    lambda config: steering.promote(config, stage, version), done=_promoted
                )

        title = f"{'Force promote' if forced else 'Promote'} {row.name}"
        self.app.push_screen(
            ConfirmScreen(title, question, lines, "Force" if forced else "Promote"), answered
        )


def _promoted(result: dict) -> str:
    if result["via"] == "daemon":
        job = result["job"]
        return f"promote job #{job['id']} {'queued' if result['queued'] else 'already queued'}"
    if result["promoted"]:
        return f"{result['version']} promoted: in service now"
    return f"{result['version']} not promoted: the gate said no ({result['active']} stays)"
