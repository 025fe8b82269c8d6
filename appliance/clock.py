"""The clock: how Forge writes down when something happened.

Stored times are ISO 8601 text in UTC to the second ("2026-12-02T07:45:30+00:00"), so they
sort as they read and compare as text; the daemon's log lines use local time instead.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso(timespec: str = "seconds", *, at: datetime | None = None, local: bool = False) -> str:
    """`at` (default: now) as ISO 8601 text to `timespec`: in UTC, or with `local`, in the
    machine's own zone with its offset."""
    moment = at or datetime.now(UTC)
    return (moment.astimezone() if local else moment).isoformat(timespec=timespec)
