"""Campaigns: per package the commits done, resolved rate and outcomes; the commits of
the package picked, each opened (enter) on its samples in `tui.screens.commit`; and the
operator's own runs (`forge solve`) with their feedback."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from tui.data import OUTCOMES, CampaignCommit, CampaignSummary, SolveRunRow
from tui.render import DASH, OUTCOME_STYLES, rate
from tui.screens.base import ForgeScreen
from tui.screens.commit import CommitScreen
from tui.widgets.tables import fill, selected_key


@dataclass(frozen=True)
class CampaignsData:
    packages: tuple[CampaignSummary, ...]
    package_id: int | None
    commits: tuple[CampaignCommit, ...]
    solve_runs: tuple[SolveRunRow, ...] = ()


def _counts(outcomes: dict[str, int]) -> list[Text]:
    return [
        Text(str(outcomes.get(o, 0)), style=OUTCOME_STYLES[o] if outcomes.get(o) else "dim")
        for o in OUTCOMES
    ]


class CampaignsScreen(ForgeScreen):
    TITLE = "Campaigns"
    BINDINGS = [Binding("enter", "open_commit", "Open commit", show=True)]

    def body(self) -> ComposeResult:
        packages = DataTable(id="campaign-table", cursor_type="row", zebra_stripes=True)
        packages.border_title = "Campaigns per package"
        packages.add_columns(
            "package",
            "split",
            "commits done",
            "samples",
            "resolved rate",
            "resolved",
            "failed",
            "not applied",
            "tampered",
            "infra",
            "pairs",
        )
        yield packages
        commits = DataTable(id="commit-table", cursor_type="row", zebra_stripes=True)
        commits.border_title = "Commits (enter: samples, stage outputs, tests)"
        commits.add_columns(
            "commit",
            "message",
            "task",
            "samples",
            "resolved",
            "failed",
            "not applied",
            "tampered",
            "infra",
        )
        yield commits
        solved = DataTable(id="solve-table", cursor_type="row", zebra_stripes=True)
        solved.border_title = "Operator runs (forge solve) and their feedback"
        solved.add_columns(
            "run", "started", "package", "snapshot", "repository", "outcome", "tests",
            "applied", "feedback", "task",
        )  # fmt: skip
        yield solved

    def selection(self) -> int | None:
        key = selected_key(self.query_one("#campaign-table", DataTable))
        return None if key is None else int(key)

    def fetch(self, package_id: int | None) -> CampaignsData:
        reader = self.app.reader
        packages = reader.campaigns()
        if package_id not in {p.package_id for p in packages}:
            package_id = packages[0].package_id if packages else None
        commits = reader.campaign_commits(package_id) if package_id is not None else ()
        return CampaignsData(packages, package_id, commits, reader.solve_runs())

    def show(self, data: CampaignsData) -> None:
        self.data = data
        fill(
            self.query_one("#campaign-table", DataTable),
            [
                (
                    str(p.package_id),
                    (
                        p.package,
                        p.split or DASH,
                        p.commits_done,
                        p.triples,
                        rate(p.resolved_rate),
                        *_counts(p.outcomes),
                        p.synthetic_pairs,
                    ),
                )
                for p in data.packages
            ],
            select=None if data.package_id is None else str(data.package_id),
        )
        commits = self.query_one("#commit-table", DataTable)
        package = next((p for p in data.packages if p.package_id == data.package_id), None)
        commits.border_title = (
            f"Commits of {package.package} (enter: samples, stage outputs, tests)"
            if package
            else "Commits"
        )
        fill(
            commits,
            [
                (
                    c.sha,
                    (
                        c.sha[:10],
                        Text(c.message, overflow="ellipsis", no_wrap=True),
                        DASH if c.usable is None else ("usable" if c.usable else "not usable"),
                        c.samples,
                        *_counts(c.outcomes),
                    ),
                )
                for c in data.commits
            ],
        )

        fill(
            self.query_one("#solve-table", DataTable),
            [(str(r.id), _solve_row(r)) for r in data.solve_runs],
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "campaign-table" or event.row_key is None:
            return
        shown = getattr(self, "data", None)
        if shown is None or str(shown.package_id) != event.row_key.value:
            self.reload()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "commit-table":
            self.action_open_commit()
        elif event.data_table.id == "campaign-table":
            self.query_one("#commit-table", DataTable).focus()

    def action_open_commit(self) -> None:
        data = getattr(self, "data", None)
        sha = selected_key(self.query_one("#commit-table", DataTable))
        if data is None or data.package_id is None or sha is None:
            self.app.notify("pick a commit first", severity="warning")
            return
        package = next(p.package for p in data.packages if p.package_id == data.package_id)
        self.app.push_screen(CommitScreen(data.package_id, package, sha))


def _solve_row(run: SolveRunRow) -> tuple:
    feedback = (
        DASH if run.feedback is None else run.feedback + (" + patch" if run.corrected else "")
    )
    style = {"good": "green", "bad": "red"}.get(run.feedback or "", "dim")
    return (
        run.id,
        run.started_at,
        run.package,
        run.snapshot,
        Text(run.where, overflow="ellipsis", no_wrap=True),
        Text("diff" if run.outcome == "diff" else "no diff",
             style="" if run.outcome == "diff" else "yellow"),
        run.test or DASH,
        "yes" if run.applied else DASH,
        Text(feedback, style=style),
        Text(run.task, overflow="ellipsis", no_wrap=True),
    )  # fmt: skip
