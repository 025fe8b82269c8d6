"""One commit of a campaign: its samples, and for the sample picked the output of each
stage, the test results of its graded run, and its diff."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from appliance.stages import STAGES
from tui.data import Sample
from tui.render import outcome, when
from tui.screens.base import ForgeScreen
from tui.widgets.tables import fill, selected_key

OUTPUT_CHARS = 1500  # of a stage's output shown; the rest is in the database


@dataclass(frozen=True)
class CommitData:
    samples: tuple[Sample, ...]


class CommitScreen(ForgeScreen):
    TITLE = "Commit"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, package_id: int, package: str, sha: str) -> None:
        super().__init__()
        self.package_id, self.package, self.sha = package_id, package, sha

    def heading(self) -> str:
        return f"{self.package} {self.sha[:10]}"

    def body(self) -> ComposeResult:
        samples = DataTable(id="sample-table", cursor_type="row", zebra_stripes=True)
        samples.border_title = "Samples"
        samples.add_columns("sample", "temperature", "outcome", "reason", "recorded")
        yield samples
        with VerticalScroll(id="sample-detail", classes="panel") as box:
            box.border_title = "Stage outputs and test results"
            yield Static(id="sample-text")

    def fetch(self, selection: None) -> CommitData:
        return CommitData(self.app.reader.samples(self.package_id, self.sha))

    def show(self, data: CommitData) -> None:
        self.data = data
        table = self.query_one("#sample-table", DataTable)
        fill(
            table,
            [
                (
                    str(s.sample),
                    (
                        s.sample,
                        f"{s.temperature:.2f}",
                        outcome(s.outcome),
                        Text(s.reason, overflow="ellipsis", no_wrap=True),
                        when(s.created_at),
                    ),
                )
                for s in data.samples
            ],
        )
        self._detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    def _detail(self) -> None:
        data = getattr(self, "data", None)
        text = self.query_one("#sample-text", Static)
        key = selected_key(self.query_one("#sample-table", DataTable))
        sample = next((s for s in data.samples if str(s.sample) == key), None) if data else None
        if sample is None:
            text.update(Text("no samples of this commit yet", style="dim"))
            return
        text.update(sample_detail(sample))


def sample_detail(sample: Sample) -> Group:
    parts: list = [
        Text.assemble(
            ("sample ", "bold"),
            str(sample.sample),
            "  ",
            outcome(sample.outcome),
            f"  {sample.reason}",
        ),
        Text(""),
        Text("Test results", style="bold underline"),
    ]
    grading = sample.grading or {}
    if not grading:
        parts.append(Text("not graded (no edits to apply)", style="dim"))
    for test, result in sorted((grading.get("fail_to_pass") or {}).items()):
        parts.append(Text.assemble("  FAIL_TO_PASS ", test, " ", _test_outcome(result)))
    for test, result in sorted((grading.get("pass_to_pass_broken") or {}).items()):
        parts.append(Text.assemble("  PASS_TO_PASS broken ", test, " ", _test_outcome(result)))
    run = grading.get("run") or {}
    if run:
        counts = ", ".join(f"{k} {v}" for k, v in sorted((run.get("counts") or {}).items()))
        parts.append(
            Text(f"  run: {run.get('status')} in {run.get('duration_s')} s; {counts}", style="dim")
        )
    parts += [Text(""), Text("Stage outputs", style="bold underline")]
    for stage in [s for s in STAGES if s in sample.stages] + sorted(
        set(sample.stages) - set(STAGES)
    ):
        result = sample.stages[stage]
        head = Text.assemble((stage, "bold cyan"), f"  adapter {result.adapter or 'base'}")
        if result.error:
            head.append(f"  error: {result.error}", style="red")
        parts.append(head)
        output = result.output
        if output is not None:
            shown = json.dumps(output, indent=2, ensure_ascii=False)
            if len(shown) > OUTPUT_CHARS:
                shown = shown[:OUTPUT_CHARS] + "\n…"
            parts.append(Syntax(shown, "json", theme="ansi_dark", background_color="default"))
    if sample.diff:
        parts += [
            Text(""),
            Text("Diff", style="bold underline"),
            Syntax(sample.diff, "diff", theme="ansi_dark", background_color="default"),
        ]
    return Group(*parts)


def _test_outcome(result: str) -> Text:
    return Text(result, style="green" if result == "passed" else "red")
