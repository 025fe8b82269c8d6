"""The reliability test: forged on the demo package, killed with SIGKILL once in each
phase of real work (ingest, campaign, dataset building, training, evaluation, the
cycle's promote or reject, an operator's promotion; the three transactions through
bench/faults' test-only fault points) and restarted each time; then nothing finished is
lost, nothing doubled, the database is sound and the registry consistent. bench/chaos.py
is the longer run of the same driver."""

from __future__ import annotations

import json
import signal
import time

import pytest

from bench.chaos import SETTINGS, Chaos
from tests.harness.conftest import DEMO


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_forged_survives_kill_9_in_every_phase(tmp_path):
    if not (DEMO / "manifest.json").is_file():
        pytest.fail("repo_packages/demo is missing: run ./install.sh (it builds the demo)")
    lines: list[str] = []
    chaos = Chaos(tmp_path / "home", seed=7, log=lines.append)
    report = chaos.run(rounds=1, random_kills=0, timeout_s=1200)
    summary = json.dumps(report.to_dict(), indent=1, default=str)
    print(summary)  # the kills survived and the checks, in the test's output
    assert report.ok, summary
    hit = {k["phase"] for k in report.kills}
    # Every kill aimed at a phase that was reached landed in work, not while idle; the
    # phases are always reached (ingest can be over before a poll; the fault points hold).
    assert {"campaign", "datasets", "train", "evaluate", "promote"} <= hit, lines
    assert len(report.kills) >= 6
    inside = {k["aimed_at"]: k for k in report.kills if "landed" in k}
    assert set(inside) == {"datasets", "decide", "promote"}, lines
    assert all(k["transaction_open"] is True for k in inside.values()), inside
    assert inside["datasets"]["landed"].startswith("inside datasets.build's transaction")
    assert inside["decide"]["phase"] in ("promote", "reject")  # whatever the gate decided
    assert inside["decide"]["landed"].endswith("(the gate's decision): statuses changed and "
                                               "the event written, not committed")  # fmt: skip
    assert inside["promote"]["landed"].startswith("inside registry.promote's transaction")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_sigterm_while_training_checkpoints_the_step_and_the_next_start_resumes(tmp_path):
    """SIGTERM: the training step in progress finishes and is checkpointed, forged exits
    within 30 s, and the next start resumes that training from the checkpoint."""
    settings = SETTINGS.replace("max_steps = 4\ncheckpoint_every = 1", "max_steps = 6\n"
                                "checkpoint_every = 100").replace("max_seq_len = 512",
                                                                  "max_seq_len = 256")  # fmt: skip
    assert "checkpoint_every = 100" in settings
    chaos = Chaos(tmp_path / "home", seed=1, settings=settings)
    chaos.prepare()
    chaos.start()
    deadline = time.monotonic() + 600
    metrics = None
    while time.monotonic() < deadline and metrics is None:
        chaos.queue_cycle_once()
        for path in chaos.home.glob("runs/train/*/metrics.jsonl"):
            if any('"step": 1,' in line for line in path.read_text().splitlines()):
                metrics = path
        time.sleep(0.2)
    assert metrics is not None, "training never logged a step"
    started = time.monotonic()
    chaos.proc.send_signal(signal.SIGTERM)
    assert chaos.proc.wait(timeout=60) == 0
    took = time.monotonic() - started
    assert took < 30, f"forged took {took:.1f} s to stop"
    # Only the stop wrote a checkpoint (checkpoint_every is 100): the step it was in.
    (checkpoint,) = (metrics.parent / "checkpoints").iterdir()
    step = int(checkpoint.name.removeprefix("step-"))
    assert 1 <= step < 6
    assert chaos.cycle_job()["status"] == "running"  # queued again at the next start
    chaos.start()
    # Until the resumed training registers its adapter (the cycle's evaluation after it is
    # not under test here).
    deadline = time.monotonic() + 900
    rows: list = []
    while time.monotonic() < deadline and not rows and chaos.busy():
        with chaos.db() as conn:
            rows = conn.execute("SELECT metrics FROM adapters").fetchall()
        time.sleep(1)
    job = chaos.cycle_job()
    chaos.stop()
    assert len(rows) == 1, (job, rows)
    assert job["attempts"] == 1, job  # the stop is not counted
    trained = json.loads(rows[0][0])
    assert trained["resumed_from"] == step and trained["steps"] == 6
