"""Forge's witness: a pytest plugin that tells Forge each outcome as pytest reports it.

It runs inside the sandbox, under the package's own Python environment, and imports
nothing of Forge. Forge copies it into a fresh read-only folder first on PYTHONPATH,
under a name chosen per run, and loads it with `-p` before any conftest or test module
is imported. It writes one JSON line per event to the FIFO named in FORGE_WITNESS, which
Forge reads while the run goes on:

    hello      when the plugin is loaded
    collect    a module (or other collector) that failed or was skipped at collection
    collected  the ids of the tests pytest is about to run
    test       one phase (setup, call, teardown) of one test, with its outcome
    finish     pytest's exit status, once the session is over

Every line carries the run's nonce and a sequence number. What is written to a FIFO is
gone to the reader at once, so code that runs later (an `atexit` hook rewriting the JUnit
report) cannot change it; Forge cross-checks this stream, the JUnit report and pytest's
exit status, and any disagreement makes the run "tampered".

Test ids are sent as the JUnit report spells them (file, classname, name, computed the
way pytest's junitxml plugin does), so the two channels can be compared one to one.
"""

from __future__ import annotations

import json
import os
import re

import pytest

PATH_VARIABLE = "FORGE_WITNESS"
NONCE_VARIABLE = "FORGE_WITNESS_NONCE"

try:  # the exact function the JUnit report uses, in this pytest version
    from _pytest.junitxml import mangle_test_address
except ImportError:  # pragma: no cover - very old or very new pytest

    def mangle_test_address(address: str) -> list[str]:
        path, bracket, params = address.partition("[")
        names = path.split("::")
        names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
        names[-1] += bracket + params
        return names


class _Channel:
    """The write end of Forge's FIFO; each record is one write of one line."""

    def __init__(self, path: str, nonce: str) -> None:
        # Non-blocking open fails at once (ENXIO) when Forge is not reading, rather than
        # hanging the run; writes then block as usual while the reader catches up.
        self.fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self.fd, True)
        self.nonce = nonce
        self.seq = 0

    def send(self, kind: str, **data: object) -> None:
        record = {"nonce": self.nonce, "seq": self.seq, "kind": kind, **data}
        self.seq += 1
        view = memoryview((json.dumps(record, separators=(",", ":")) + "\n").encode())
        while view:
            view = view[os.write(self.fd, view) :]


def _open() -> _Channel:
    path = os.environ.pop(PATH_VARIABLE, "")
    nonce = os.environ.pop(NONCE_VARIABLE, "")
    if not path or not nonce:
        raise RuntimeError(f"forge_witness: {PATH_VARIABLE} and {NONCE_VARIABLE} must be set")
    return _Channel(path, nonce)


class _Inert:
    """An xdist worker's stand-in: the controller reports every outcome, and the worker
    starts after the controller has taken the channel's variables out of its environment."""

    def send(self, kind: str, **data: object) -> None:
        return None


# Opened on import, the earliest moment a plugin has: before conftests and test modules.
if os.environ.get("PYTEST_XDIST_WORKER") and PATH_VARIABLE not in os.environ:
    _channel = _Inert()
else:
    _channel = _open()
_channel.send("hello", pid=os.getpid())
_session = None


def _junit_id(nodeid: str, location: object) -> dict:
    names = mangle_test_address(nodeid)
    file = location[0] if isinstance(location, tuple) and location else None
    return {
        "nodeid": nodeid,
        "file": file if isinstance(file, str) else None,
        "classname": ".".join(names[:-1]),
        "name": names[-1],
    }


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session) -> None:
    global _session
    _session = session


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report) -> None:
    if not report.passed:
        where = getattr(report, "location", None)
        _channel.send("collect", outcome=report.outcome, **_junit_id(report.nodeid, where))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session) -> None:
    tests = [_junit_id(item.nodeid, item.location) for item in session.items]
    _channel.send("collected", tests=tests)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report) -> None:
    _channel.send(
        "test",
        when=report.when,
        outcome=report.outcome,
        xfail=hasattr(report, "wasxfail"),
        **_junit_id(report.nodeid, report.location),
    )


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    # After pytest_sessionfinish (where the JUnit report is written and the exit status
    # settles): what the process exits with should be this.
    if _session is not None:
        _channel.send("finish", exitstatus=int(_session.exitstatus))
