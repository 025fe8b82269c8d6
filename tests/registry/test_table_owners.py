"""The registry's, the evaluation's and the job queue's tables each have one owner module:
only its SQL names them; every other module calls its functions and gets frozen records.

The migrations make the tables; tui/demo.py writes the dashboard's fixed demo rows into
the real schema (left out here, as bench/ is: its checkers read the database on their
own, to judge Forge from outside).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWNERS = {
    "adapters": "appliance/registry/store.py",
    "adapter_events": "appliance/registry/store.py",
    "eval_runs": "appliance/evaluation/store.py",
    "eval_examples": "appliance/evaluation/store.py",
    "eval_outcomes": "appliance/evaluation/store.py",
    "gate_decisions": "appliance/evaluation/store.py",
    "jobs": "appliance/ops/jobs.py",
}
NOT_JUDGED = {"appliance/store/migrations.py", "tui/demo.py"}


def _naming(table: str) -> set[str]:
    sql = re.compile(rf"\b(FROM|JOIN|INTO|UPDATE)\s+{table}\b(?!/)")
    found = set()
    for package in ("appliance", "daemon", "tui"):
        for path in (ROOT / package).rglob("*.py"):
            where = path.relative_to(ROOT).as_posix()
            if where not in NOT_JUDGED and sql.search(path.read_text()):
                found.add(where)
    return found


@pytest.mark.parametrize("table", sorted(OWNERS))
def test_only_the_owner_names_the_table(table):
    assert _naming(table) == {OWNERS[table]}
