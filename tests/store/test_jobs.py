"""The job queue on a real database file: lifecycle, backoff, keys, one heavy job at a
time, crash recovery, and claims from two threads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from appliance.errors import UsageError
from appliance.ops import jobs
from appliance.store import connect

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture
def db(tmp_path):
    return connect(tmp_path / "forge.db")


def test_a_job_runs_to_done(db):
    job, queued = jobs.enqueue(db, "ingest", {"folder": "x"}, now=NOW)
    assert queued and job.status == "queued" and job.args == {"folder": "x"}
    taken = jobs.claim(db, now=NOW)
    assert taken.id == job.id and taken.status == "running" and taken.attempts == 1
    assert jobs.claim(db, now=NOW) is None
    jobs.set_progress(db, job.id, {"step": 3, "of": 5})
    assert jobs.get(db, job.id).progress == {"step": 3, "of": 5}
    finished = jobs.done(db, job.id, now=NOW)
    assert finished.status == "done" and finished.finished_at


def test_a_failure_backs_off_exponentially_then_fails_for_good(db):
    job, _ = jobs.enqueue(db, "campaign", max_attempts=3, now=NOW)
    waits = []
    clock = NOW
    for attempt in (1, 2, 3):
        taken = jobs.claim(db, now=clock)
        assert taken.id == job.id and taken.attempts == attempt
        after = jobs.failed(db, job.id, f"boom {attempt}", now=clock)
        if attempt < 3:
            assert after.status == "queued" and after.error == f"boom {attempt}"
            due = datetime.fromisoformat(after.not_before)
            waits.append((due - clock).total_seconds())
            assert jobs.claim(db, now=due - timedelta(seconds=1)) is None  # not yet
            clock = due
    assert waits == [jobs.BACKOFF_S, 2 * jobs.BACKOFF_S]
    final = jobs.get(db, job.id)
    assert final.status == "failed" and final.error == "boom 3"


def test_a_key_allows_one_live_job(db):
    first, queued = jobs.enqueue(db, "cycle", key="cycle", now=NOW)
    again, queued_again = jobs.enqueue(db, "cycle", key="cycle", now=NOW)
    assert queued and not queued_again and again.id == first.id
    jobs.claim(db, now=NOW)
    jobs.done(db, first.id, now=NOW)
    later, queued = jobs.enqueue(db, "cycle", key="cycle", now=NOW)
    assert queued and later.id != first.id


def test_one_heavy_job_at_a_time_and_light_ones_pass_it(db):
    train, _ = jobs.enqueue(db, "train", heavy=True, now=NOW)
    campaign, _ = jobs.enqueue(db, "campaign", heavy=True, now=NOW)
    ingest, _ = jobs.enqueue(db, "ingest", now=NOW)
    assert jobs.claim(db, now=NOW).id == train.id
    assert jobs.claim(db, now=NOW).id == ingest.id  # ingest never waits behind training
    assert jobs.claim(db, now=NOW) is None  # the second heavy job waits
    jobs.done(db, train.id, now=NOW)
    assert jobs.claim(db, now=NOW).id == campaign.id


def test_jobs_left_running_by_a_crash_are_queued_again(db):
    job, _ = jobs.enqueue(db, "train", heavy=True, now=NOW)
    jobs.claim(db, now=NOW)
    assert jobs.requeue_running(db, now=NOW) == [job.id]
    back = jobs.get(db, job.id)
    assert back.status == "queued" and back.attempts == 0  # the daemon stopped, not the job
    assert jobs.claim(db, now=NOW).attempts == 1


def test_cancel(db):
    job, _ = jobs.enqueue(db, "ingest", now=NOW)
    assert jobs.cancel(db, job.id, now=NOW).status == "cancelled"
    assert jobs.claim(db, now=NOW) is None
    with pytest.raises(UsageError, match="nothing to cancel"):
        jobs.cancel(db, job.id)
    with pytest.raises(UsageError, match="no job"):
        jobs.get(db, 999)


def test_two_workers_never_take_the_same_job(db, tmp_path):
    for i in range(40):
        jobs.enqueue(db, "ingest", {"i": i}, now=NOW)
    taken: list[int] = []
    lock = threading.Lock()

    def worker():
        own = connect(tmp_path / "forge.db")
        while (job := jobs.claim(own, now=NOW)) is not None:
            with lock:
                taken.append(job.id)
            jobs.done(own, job.id, now=NOW)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(set(taken)) and len(taken) == 40
    assert {j.status for j in jobs.jobs(db)} == {"done"}


def test_one_heavy_job_per_gpu_and_kinds_held_outside_their_window(db):
    first, _ = jobs.enqueue(db, "train", heavy=True, now=NOW)
    second, _ = jobs.enqueue(db, "evaluate", heavy=True, now=NOW)
    third, _ = jobs.enqueue(db, "campaign", heavy=True, now=NOW)
    assert jobs.claim(db, heavy_slots=2, now=NOW).id == first.id
    assert jobs.claim(db, heavy_slots=2, now=NOW).id == second.id  # the second GPU
    assert jobs.claim(db, heavy_slots=2, now=NOW) is None  # both busy
    jobs.done(db, first.id, {"adapter": "scope-v1"}, now=NOW)
    assert jobs.get(db, first.id).result == {"adapter": "scope-v1"}
    assert jobs.claim(db, heavy_slots=2, held=("campaign",), now=NOW) is None  # outside its window
    assert jobs.claim(db, heavy_slots=2, now=NOW).id == third.id


def test_recent_failures_and_a_stopped_job_requeued_without_counting(db):
    job, _ = jobs.enqueue(db, "backup", max_attempts=2, now=NOW)
    jobs.claim(db, now=NOW)
    jobs.failed(db, job.id, "disk full", now=NOW)  # retrying
    assert [(j.id, j.status) for j in jobs.recent_failures(db)] == [(job.id, "queued")]
    jobs.claim(db, now=NOW + timedelta(hours=1))
    jobs.failed(db, job.id, "disk full", now=NOW + timedelta(hours=1))
    assert jobs.recent_failures(db)[0].status == "failed"
    other, _ = jobs.enqueue(db, "train", heavy=True, now=NOW)
    jobs.claim(db, now=NOW)
    assert jobs.requeue(db, other.id, now=NOW).attempts == 0  # stopped at a checkpoint


@pytest.mark.parametrize(
    ("window", "hour", "open_"),
    [("", 12, True), ("22:00-06:00", 23, True), ("22:00-06:00", 3, True),
     ("22:00-06:00", 12, False), ("09:00-17:00", 12, True), ("09:00-17:00", 17, False)],
)  # fmt: skip
def test_campaign_window(window, hour, open_):
    from daemon.forged import in_window

    assert in_window(window, datetime(2026, 1, 1, hour, 0)) is open_
