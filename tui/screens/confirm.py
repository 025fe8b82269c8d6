"""A yes/no dialog over the current screen, showing what the action rests on (the gate
report) before it is done."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, question: str, report: list[str], confirm: str) -> None:
        super().__init__()
        self.heading, self.question, self.report, self.confirm = title, question, report, confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.heading, id="dialog-title")
            yield Static(self.question, id="dialog-question")
            with VerticalScroll(id="dialog-report"):
                yield Static(
                    Text("\n".join(self.report))
                    if self.report
                    else Text("no gate report", style="dim")
                )
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.confirm} (y)", id="yes", variant="error")
                yield Button("Cancel (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
