"""Adapters: the stage's primary metric across versions, a bar per version."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.data import MetricPoint
from tui.render import bar, interval, rate

LABEL = 8
NUMBERS = 24  # " 0.62  [0.51, 0.72]"


class MetricChart(Static):
    """Bars scaled to [0, 1] (every primary metric is a rate); the active one marked."""

    def on_mount(self) -> None:
        self.border_title = "Primary metric"

    def show(self, metric: str, points: tuple[MetricPoint, ...], active: str) -> None:
        self.border_title = f"{metric} across versions"
        self._points, self._active = points, active
        self.update(self._chart())

    def on_resize(self) -> None:
        if hasattr(self, "_points"):
            self.update(self._chart())

    def _chart(self) -> Text:
        if not self._points:
            return Text("no gate decision has measured this stage yet", style="dim")
        width = max(10, self.content_size.width - LABEL - NUMBERS)
        lines = Text()
        for i, point in enumerate(self._points):
            is_active = point.label == self._active
            style = "bold green" if is_active else "cyan"
            mark = "●" if is_active else " "
            lines.append(f"{mark} {point.label:<{LABEL - 2}}", style="bold" if is_active else "")
            lines.append_text(bar(point.value, width, style))
            lines.append(f" {rate(point.value):>5}  {interval(point.interval)}")
            if i < len(self._points) - 1:
                lines.append("\n")
        return lines
