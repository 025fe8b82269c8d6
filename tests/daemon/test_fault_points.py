"""The chaos test's fault points (bench/faults): a process started with them stops right
inside the registry's promote transaction when the point is armed, says so, and a SIGKILL
there leaves nothing committed; unarmed, the same code runs straight through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from appliance import registry
from bench.faults import FaultPoints
from tests.registry.conftest import add_adapter

ROOT = Path(__file__).resolve().parents[2]
PROMOTE = """
import sys
from appliance import registry
from appliance.store import open_db
registry.promote(open_db(), "scope", int(sys.argv[1]), forced=True)
print("promoted", flush=True)
"""


def start_promote(faults: FaultPoints, version: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PROMOTE, str(version)],
        cwd=ROOT,
        env=faults.env(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def events(db) -> list[tuple]:
    return db.execute("SELECT action, to_version, forced FROM adapter_events").fetchall()


def test_a_kill_at_the_armed_point_lands_inside_promote_and_commits_nothing(db, tmp_path):
    for version in (1, 2):
        add_adapter(db, "scope", version)
    faults = FaultPoints(tmp_path / "faults")

    faults.arm("registry-change")
    proc = start_promote(faults, 1)
    inside = faults.wait_inside(60, gone_by=lambda: proc.poll() is not None)
    assert inside is not None, proc.communicate()[0]
    assert (inside.point, inside.pid, inside.phase) == ("registry-change", proc.pid, "promote")
    assert inside.transaction_open is True
    assert inside.where.startswith("inside registry.promote's transaction for scope-v1 (forced")
    assert registry.get(db, "scope", 1).status == "candidate"  # not committed: not seen here
    proc.kill()
    proc.wait()
    faults.clear()
    assert registry.get(db, "scope", 1).status == "candidate" and events(db) == []

    # Armed again and released instead of killed: the promotion goes on and commits, once.
    faults.arm("registry-change")
    proc = start_promote(faults, 1)
    assert faults.wait_inside(60, gone_by=lambda: proc.poll() is not None) is not None
    faults.clear()
    assert proc.wait(timeout=60) == 0 and "promoted" in proc.stdout.read()
    assert registry.get(db, "scope", 1).status == "active"
    assert events(db) == [("promote", 1, 1)]
    assert not list((tmp_path / "faults" / "armed").iterdir())  # the point was used up

    # Unarmed, the points cost nothing: the next promotion runs straight through.
    proc = start_promote(faults, 2)
    assert proc.wait(timeout=60) == 0, proc.stdout.read()
    assert faults.inside() is None
    assert events(db) == [("promote", 1, 1), ("promote", 2, 1)]


def test_forge_itself_knows_nothing_of_the_fault_points():
    """The points live in bench/faults only: no module of Forge names them or their switch."""
    named = [
        str(path.relative_to(ROOT))
        for folder in ("appliance", "daemon", "tui")
        for path in (ROOT / folder).rglob("*.py")
        if any(word in path.read_text() for word in ("FORGE_FAULTS", "bench.faults", "CHAOS"))
    ]
    assert named == []
