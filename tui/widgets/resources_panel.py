"""Overview: CPU, memory, disk, and each GPU (utilisation, memory, temperature)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from tui.render import bar, load_style, percent, size


class ResourcesPanel(Static):
    def on_mount(self) -> None:
        self.border_title = "Resources"

    def show(self, resources: dict) -> None:
        cpu, memory, disk = resources["cpu"], resources["memory"], resources["disk"]
        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True, min_width=6)
        table.add_column(no_wrap=True, min_width=16)
        table.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_row(
            "CPU",
            bar(cpu["percent"] / 100, 16, load_style(cpu["percent"])),
            f"{percent(cpu['percent'])} of {cpu['cores']} cores, load "
            + " ".join(f"{x:.2f}" for x in cpu["load"]),
        )
        table.add_row(
            "Memory",
            bar(memory["percent"] / 100, 16, load_style(memory["percent"])),
            f"{percent(memory['percent'])}  {size(memory['used_bytes'])} of "
            f"{size(memory['total_bytes'])}",
        )
        table.add_row(
            "Disk",
            bar(disk["percent"] / 100, 16, load_style(disk["percent"])),
            f"{percent(disk['percent'])}  {size(disk['free_bytes'])} free of "
            f"{size(disk['total_bytes'])}",
        )
        gpus = resources.get("gpus") or []
        if not gpus:
            self.update(Group(table, Text("no GPU: a CPU box", style="dim")))
            return
        table.add_row("", "", "")
        for gpu in gpus:
            used, total = gpu["memory_used_bytes"], gpu["memory_total_bytes"]
            util = gpu["util_percent"]
            table.add_row(
                f"GPU {gpu['index']}",
                bar(util / 100, 16, load_style(util)),
                f"{percent(util)}  {size(used)} of {size(total)}  {gpu['temperature_c']}°C  "
                f"{gpu['name']}",
            )
        self.update(table)
