"""How the dashboard writes values: times, sizes, rates, bars, outcome colours."""

from __future__ import annotations

from rich.text import Text

DASH = "–"
OUTCOME_STYLES = {
    "resolved": "green",
    "failed": "red",
    "not_applied": "yellow",
    "tampered": "bold red reverse",
    "infra": "magenta",
}
STATUS_STYLES = {
    "active": "bold green",
    "candidate": "cyan",
    "inactive": "dim",
    "rejected": "red",
    "queued": "cyan",
    "running": "bold yellow",
    "done": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "promote": "green",
    "reject": "red",
    "insufficient": "yellow",
    "accepted": "green",
    "duplicate": "dim",
    "recovered": "yellow",
}


def when(iso: str | None) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM' (times are stored in UTC)."""
    if not iso:
        return DASH
    return iso.replace("T", " ")[:16]


def size(n: float | None) -> str:
    if n is None:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def rate(x: float | None, digits: int = 2) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def percent(x: float | None) -> str:
    return DASH if x is None else f"{x:.0f}%"


def interval(pair) -> str:
    if not pair:
        return ""
    low, high = pair
    return f"[{rate(low)}, {rate(high)}]"


def bar(fraction: float | None, width: int = 20, style: str = "green") -> Text:
    """A horizontal bar for a fraction in [0, 1]."""
    fraction = 0.0 if fraction is None else min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def load_style(percent_used: float | None) -> str:
    if percent_used is None:
        return "dim"
    return "red" if percent_used >= 90 else "yellow" if percent_used >= 70 else "green"


def status(value: str) -> Text:
    return Text(value, style=STATUS_STYLES.get(value, ""))


def outcome(value: str) -> Text:
    return Text(value, style=OUTCOME_STYLES.get(value, ""))


def progress(progress: dict) -> Text:
    """A running job's progress: step, a bar and done/total, and its text."""
    done, total = progress.get("done"), progress.get("total")
    parts = Text()
    if progress.get("step"):
        parts.append(f"{progress['step']} ", style="bold")
    if isinstance(done, int | float) and isinstance(total, int | float) and total:
        parts.append_text(bar(done / total, 16, "yellow"))
        parts.append(f" {done:g}/{total:g}")
    if progress.get("text"):
        parts.append(f"  {progress['text']}")
    for device, doing in (progress.get("workers") or {}).items():
        # A campaign or an evaluation spread over devices: each device's worker.
        name = f"GPU {device}" if str(device).isdigit() else str(device)
        parts.append(f"\n  {name}: ", style="bold")
        parts.append(doing or "idle", style="" if doing else "dim")
    return parts if parts.plain else Text("starting", style="dim")
