"""The clock's text: what the database and the daemon's logs hold."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from appliance.clock import now_iso


def test_stored_times_are_utc_to_the_second():
    text = now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", text)
    assert abs(datetime.fromisoformat(text) - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_given_moment_and_finer_precision():
    moment = datetime(2026, 12, 2, 7, 45, 30, 123456, tzinfo=UTC)
    assert now_iso(at=moment) == "2026-12-02T07:45:30+00:00"
    assert now_iso("milliseconds", at=moment) == "2026-12-02T07:45:30.123+00:00"


def test_local_time_carries_the_machines_offset():
    moment = datetime(2026, 12, 2, 7, 45, 30, tzinfo=UTC)
    local = now_iso(at=moment, local=True)
    assert datetime.fromisoformat(local) == moment
    assert local == moment.astimezone().isoformat(timespec="seconds")
    assert now_iso(at=moment.astimezone(timezone(timedelta(hours=2)))) == (
        "2026-12-02T09:45:30+02:00"
    )
