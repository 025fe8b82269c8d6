"""Overview: the running jobs with their progress, the queue, the recent failures."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tui.render import progress, when


def _args(job: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((job.get("args") or {}).items()))


class RunningPanel(Static):
    def on_mount(self) -> None:
        self.border_title = "Running"

    def show(self, running: list[dict]) -> None:
        if not running:
            self.update(Text("no job is running", style="dim"))
            return
        rows = []
        for job in running:
            head = Text.assemble(
                (f"#{job['id']} {job['kind']}", "bold yellow"),
                f" {_args(job)}  started {when(job.get('started_at'))}, attempt "
                f"{job['attempts']} of {job['max_attempts']}",
            )
            rows += [head, progress(job.get("progress") or {})]
        self.update(Group(*rows))


class QueuePanel(Static):
    def on_mount(self) -> None:
        self.border_title = "Queue"

    def show(self, queue: list[dict]) -> None:
        if not queue:
            self.update(Text("the queue is empty", style="dim"))
            return
        table = Table.grid(padding=(0, 2))
        for job in queue:
            retry = f"retry {job['attempts'] + 1}" if job["attempts"] else ""
            if job["progress"].get("waiting"):  # held by the disk-pressure guard
                retry = Text(job["progress"]["waiting"], style="yellow")
            table.add_row(
                f"#{job['id']}",
                Text(job["kind"], style="cyan"),
                _args(job),
                f"not before {when(job['not_before'])}",
                retry,
            )
        self.update(table)


class FailuresPanel(Static):
    def on_mount(self) -> None:
        self.border_title = "Recent failures"

    def show(self, failures: list[dict]) -> None:
        if not failures:
            self.update(Text("no recent failures", style="dim"))
            return
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, min_width=3)
        table.add_column(no_wrap=True, min_width=8)
        table.add_column(no_wrap=True, min_width=16)
        table.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
        for job in failures:
            table.add_row(
                f"#{job['id']}",
                Text(job["kind"], style="red"),
                when(job.get("finished_at") or job.get("not_before")),
                (job.get("error") or "").splitlines()[0] if job.get("error") else "",
            )
        self.update(table)
