"""childproc.Child, the one child-process runner of forged's heavy jobs and the training
child: the result or the exception comes back through the pipe as a record, the output
goes to the log, a child that dies without a word is told apart, SIGTERM stops it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from appliance.childproc import STOP, Child, Raised, Returned, Stopped, raised
from appliance.errors import ForgeError, TrainingFailed

ROOT = Path(__file__).resolve().parent.parent


def returns(value):
    print("working", flush=True)
    os.write(2, b"from C\n")  # a library writing to the file descriptor itself
    return {"value": value, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}


def fails(kind: str):
    if kind == "forge":
        raise TrainingFailed("no rows", "add rows")
    raise ValueError("bad value")


def dies():
    os._exit(3)


def waits_for_stop(mode: str):
    print("ready", flush=True)  # its SIGTERM handler is set
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if STOP.is_set():
            raise Stopped("stopped at step 1")
        time.sleep(0.01)
    return mode


def test_the_value_comes_back_and_the_output_goes_to_the_log(tmp_path):
    log = tmp_path / "child.log"
    child = Child(returns, (7,), log, name="test", env={"CUDA_VISIBLE_DEVICES": "1"})
    assert child.wait() == Returned({"value": 7, "gpu": "1"})
    assert child.died() == "exit 0"
    assert log.read_text() == "working\nfrom C\n"


def test_an_exception_comes_back_as_a_record_with_its_traceback_in_the_log(tmp_path):
    log = tmp_path / "child.log"
    child = Child(fails, ("bug",), log, name="test")
    assert child.wait() == Raised("ValueError", "bad value", None, stopped=False)
    assert child.died() == "exit 1"
    assert "Traceback" in log.read_text() and "ValueError: bad value" in log.read_text()


def test_an_expected_exception_has_no_traceback(tmp_path):
    log = tmp_path / "child.log"
    child = Child(fails, ("forge",), log, name="test", expected=(ForgeError,))
    outcome = child.wait()
    assert outcome == Raised("TrainingFailed", "no rows\n  → add rows", "no rows", False)
    assert outcome.reason() == "no rows"
    assert "Traceback" not in log.read_text()


def test_a_child_that_dies_without_a_word_is_told_apart(tmp_path):
    child = Child(dies, (), tmp_path / "child.log", name="test")
    child.join()
    assert child.outcome() is None  # the pipe's EOF is no outcome, and no error
    assert child.died() == "exit 3"


def test_sigterm_stops_the_child_at_its_checkpoint(tmp_path):
    for mode in ("stop", "raise"):
        log = tmp_path / f"{mode}.log"
        child = Child(waits_for_stop, (mode,), log, name="test", on_sigterm=mode)
        deadline = time.monotonic() + 30
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and child.is_alive()
            time.sleep(0.05)
        child.terminate()
        child.join(30)
        outcome = child.outcome()
        assert isinstance(outcome, Raised) and outcome.stopped, (mode, log.read_text())
        assert outcome.message in ("stopped at step 1", "stopped by SIGTERM")


def test_the_reason_of_a_record():
    assert raised(ForgeError("why", "fix")).reason() == "why"
    assert raised(KeyError("k")).reason() == "KeyError: 'k'"
    assert raised(Stopped("at a checkpoint")).stopped


def test_a_child_whose_parent_died_while_it_started_exits_at_once():
    """The parent's pid comes from the parent: one that died before the child asked for
    PDEATHSIG (the child adopted by another process) is caught, and the child exits."""
    code = "from appliance.childproc import die_with_parent as d; d({}); print('alive')"
    gone = subprocess.run([sys.executable, "-c", code.format(os.getpid() + 10**6)],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert (gone.returncode, gone.stdout) == (1, "")
    here = subprocess.run([sys.executable, "-c", code.format(os.getpid())],
                          cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert (here.returncode, here.stdout) == (0, "alive\n")
