"""Overview: what the corpus holds, the last ingest, and the adapters in service."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from appliance.stages import STAGES
from tui.render import status, when


class CorpusPanel(Static):
    def on_mount(self) -> None:
        self.border_title = "Corpus and adapters"

    def show(self, state: dict) -> None:
        corpus, quarantine, ingest = state["corpus"], state["quarantine"], state["ingest"]
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="dim", no_wrap=True)
        facts.add_column()
        packages, commits = _n(corpus["packages"], "package"), _n(corpus["commits"], "commit")
        facts.add_row("corpus", f"{packages}, {commits}")
        facts.add_row("quarantine", _n(quarantine["packages"], "package"))
        facts.add_row("waiting", ", ".join(ingest["waiting"]) or "nothing in ingest/")
        last = ingest.get("last")
        if last:
            facts.add_row(
                "last ingest",
                Text.assemble(f"{when(last['at'])} {last['source']} ", status(last["outcome"])),
            )
        stages = Table.grid(padding=(0, 2))
        stages.add_column(style="dim", no_wrap=True)
        stages.add_column(no_wrap=True)
        for stage in STAGES:
            active = state["adapters"].get(stage)
            stages.add_row(stage, Text(active, style="green") if active else Text("base"))
        self.update(Group(facts, Text(""), stages))


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
