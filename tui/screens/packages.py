"""Packages: the corpus, the quarantine with the rejection reasons, the ingest history."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from tui.data import PackagesView
from tui.render import DASH, status, when
from tui.screens.base import ForgeScreen
from tui.widgets.tables import fill


class PackagesScreen(ForgeScreen):
    TITLE = "Packages"

    def body(self) -> ComposeResult:
        table = DataTable(id="corpus-table", cursor_type="row", zebra_stripes=True)
        table.border_title = "Corpus"
        table.add_columns(
            "package", "version", "split", "ingested", "commits", "graded", "usable", "infra"
        )
        yield table
        with Horizontal(id="packages-lower"):
            with VerticalScroll(id="quarantine", classes="panel") as box:
                box.border_title = "Quarantine"
                yield Static(id="quarantine-text")
            history = DataTable(id="ingest-table", cursor_type="row", zebra_stripes=True)
            history.border_title = "Ingest history"
            history.add_columns("at", "source", "outcome", "reasons")
            yield history

    def fetch(self, selection: None) -> PackagesView:
        return self.app.reader.packages()

    def show(self, view: PackagesView) -> None:
        fill(
            self.query_one("#corpus-table", DataTable),
            [
                (
                    f"{p.name}-{p.version}",
                    (
                        p.name,
                        p.version,
                        p.split or DASH,
                        when(p.ingested_at),
                        p.commits,
                        p.graded,
                        p.usable,
                        Text(str(p.infra), style="magenta" if p.infra else ""),
                    ),
                )
                for p in view.corpus
            ],
        )
        self.query_one("#quarantine-text", Static).update(_quarantine(view))
        fill(
            self.query_one("#ingest-table", DataTable),
            [
                (str(i), (when(e.at), e.source, status(e.outcome), "; ".join(e.reasons)))
                for i, e in enumerate(view.history)
            ],
        )


def _quarantine(view: PackagesView) -> Group:
    parts: list = []
    if view.waiting:
        parts += [Text.assemble(("waiting in ingest/: ", "bold"), ", ".join(view.waiting)), ""]
    if not view.quarantine:
        parts.append(Text("no package was rejected", style="dim"))
    for package in view.quarantine:
        reasons = Table.grid(padding=(0, 1))
        reasons.add_column(no_wrap=True)
        reasons.add_column()
        for reason in package.reasons or ("(no reasons recorded)",):
            reasons.add_row("  -", reason)
        parts += [Text(package.folder, style="bold red"), reasons]
    return Group(*parts)
