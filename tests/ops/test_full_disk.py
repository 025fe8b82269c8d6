"""A real full file system: FORGE_HOME on a size-limited tmpfs (mounted here, as root).

Short of room, ingest and heavy jobs wait with the reason (a gc first) and start nothing;
a disk that fills anyway while a package is being taken leaves no half-written copy, no
row, no quarantine entry, and the package itself untouched; once there is room again it
is taken whole.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.ops import jobs
from appliance.ops.pressure import DiskGuard
from appliance.packages import corpus, ingest
from appliance.status import gather
from tests.harness.conftest import DEMO, make_home

SIZE_MB = 96


def no_rows(name: str) -> int:
    return 0


def _digest(tree: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(tree.rglob("*")):
        h.update(str(path.relative_to(tree)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of SIZE_MB mounted for this test (needs root, as CI runs)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: the full-disk test must mount its tmpfs")
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0755", "tmpfs",
                    str(mount)], check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(fs: Path, leave_bytes: int = 0) -> Path:
    """Write a ballast file until only `leave_bytes` are free (0: until ENOSPC)."""
    ballast = fs / f"ballast-{len(list(fs.glob('ballast-*')))}"
    chunk = b"\0" * (1 << 20)
    with ballast.open("wb") as out:
        while True:
            room = shutil.disk_usage(fs).free - leave_bytes
            if room <= 0:
                break
            try:
                out.write(chunk[: min(len(chunk), room)])
                out.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return ballast


def _source(tmp_path: Path) -> Path:
    """A copy of the demo package outside the small file system (the USB stick)."""
    return Path(shutil.copytree(DEMO, tmp_path / "usb" / "demo", symlinks=True))


def _nothing_taken(config, db, source: Path, before: str) -> None:
    assert _digest(source) == before  # the package itself: untouched
    assert corpus.packages(db) == []
    leftovers = [p.name for p in config.dir("corpus").iterdir()]
    assert leftovers == [], "a staging copy or a half-written package was left in corpus/"
    assert list(config.dir("quarantine").iterdir()) == []
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_short_of_room_ingest_and_heavy_jobs_wait_and_start_nothing(
    small_fs, tmp_path, monkeypatch
):
    config, db = make_home(small_fs / "home", monkeypatch, "[doctor]\nmin_free_gb = 0.02\n")
    source = _source(tmp_path)
    before = _digest(source)
    ballast = _fill(small_fs, leave_bytes=16 << 20)  # under 2 × the package + the 20 MB floor
    [result] = ingest.ingest(config, db, source, trained_rows=no_rows)
    assert result.outcome == "waiting" and "waiting for disk" in result.reasons[0]
    _nothing_taken(config, db, source, before)

    job, _ = jobs.enqueue(db, "train", heavy=True, key="train")
    claimed = jobs.claim(db)
    guard = DiskGuard(config)
    room = guard.admit(db, claimed)
    assert not room.ok and guard.last_gc is not None  # a gc ran first
    held = jobs.get(db, job.id)
    assert held.status == "queued" and held.attempts == 0 and held.started_at is not None
    assert "waiting for disk: train needs 3 GB" in held.progress["waiting"]
    queue = gather(config, db, resources={})["jobs"]["queue"]
    assert queue[0]["progress"]["waiting"] == held.progress["waiting"]
    assert jobs.claim(db) is None  # not again before its retry time

    ballast.unlink()
    small = load_config().settings.model_copy(update={"doctor": config.settings.doctor.model_copy(
        update={"job_need_gb": config.settings.doctor.job_need_gb.model_copy(
            update={"train": 0.01})})})  # fmt: skip
    roomy = type(config)(config.home, config.source, small)
    assert DiskGuard(roomy).admit(db, held).ok
    assert "waiting" not in jobs.get(db, job.id).progress
    [result] = ingest.ingest(config, db, source, trained_rows=no_rows)
    assert result.outcome == "accepted", result.to_dict()


@pytest.mark.parametrize("stage", ["copy", "validate", "record"])
def test_a_disk_that_fills_during_ingest_loses_nothing(small_fs, tmp_path, monkeypatch, stage):
    config, db = make_home(small_fs / "home", monkeypatch, "[doctor]\nmin_free_gb = 0\n")
    source = _source(tmp_path)
    before = _digest(source)
    ballast: list[Path] = []

    def fill(step: str) -> None:  # another program fills the disk at this step
        if step == stage and not ballast:
            ballast.append(_fill(small_fs))

    [result] = ingest.ingest(config, db, source, hook=fill, keep=True, trained_rows=no_rows)
    assert ballast, f"the ingest never reached {stage}"
    if stage != "record" or result.outcome != "accepted":
        # (SQLite may write the row into WAL pages it already has: then it is accepted.)
        assert result.outcome == "waiting" and "disk" in result.reasons[0], result.to_dict()
    if stage != "record":
        _nothing_taken(config, db, source, before)
    ballast[0].unlink()
    results = ingest.ingest(config, db, source, keep=True, trained_rows=no_rows)
    assert results[-1].outcome in ("accepted", "duplicate"), [r.to_dict() for r in results]
    [package] = corpus.packages(db)
    assert (config.home / package.path / "repo").is_dir()
    assert [p.name for p in config.dir("corpus").iterdir()] == [Path(package.path).name]
    assert _digest(source) == before
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
