"""The result stream: outcomes the witness plugin sends while the tests run, and the
cross-check of that stream with the JUnit report and pytest's exit status.

The channel is a FIFO that Forge makes in a fresh folder of the worktree (the folder is
bound read-only into the sandbox; writing to a FIFO works through a read-only mount) and
reads from a host thread during the run. The plugin (witness/forge_witness.py) is copied
next to it under a name chosen per run, so no file of the repository can stand in for it.
Whatever is written to the FIFO reaches Forge at once: code that runs after a test was
reported (an `atexit` hook, a doctored report) can add lines but never take one back.
Lines it adds show as a broken sequence, a record after the finish, a conflict, or a
report that no longer matches (a test's worst outcome stands, so an added pass hides
no failure).

What the channel cannot stop: code in the same Python process as pytest (conftest files,
the package's own modules, anything imported during collection) can monkeypatch pytest or
the plugin before a report is made, so the report itself is wrong on every channel.
Grading narrows that: test files (conftest included) are laid over from the commit, and a
patch that edits test infrastructure or names pytest's internals is flagged
(grading.infrastructure_flags).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from appliance.harness.junit import Report, junit_id, module_path, worst

PLUGIN = Path(__file__).resolve().parent / "witness" / "forge_witness.py"
FOLDER = "witness"  # in the worktree container, next to repo/ and out/
FIFO = "results.fifo"
MAX_STREAM_BYTES = 64 << 20  # the JUnit report's cap too
DRAIN_S = 5.0  # how long to wait for the last lines once the sandbox has ended
# pytest's exit statuses for a session that ran to its end: 0 passed, 1 tests failed,
# 2 interrupted, 5 nothing collected (3 and 4 are internal and usage errors).
SESSION_ENDED = (0, 1, 2, 5)
SILENT = "the witness plugin sent nothing"


@dataclass(frozen=True)
class Stream:
    """What the witness said, or why what it said cannot be believed (`problem`)."""

    problem: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)  # as junit.Report.outcomes
    collection_errors: tuple[str, ...] = ()
    collected: frozenset[str] | None = None  # None: no "collected" record came
    reported: frozenset[str] = frozenset()  # tests with at least one phase reported
    exitstatus: int | None = None  # None: no "finish" record came


class WitnessChannel:
    """The FIFO, its reader thread and what the sandboxed run needs to reach it."""

    def __init__(self, folder: Path, module: str) -> None:
        self.folder = folder
        self.fifo = folder / FIFO
        self.module = module
        self.nonce = secrets.token_hex(16)
        self._chunks: list[bytes] = []
        self._size = 0
        self.overflow = False
        self.lingering = False  # a writer still held the FIFO after the run had ended
        self._stop = threading.Event()
        self._reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Forge holds a write end too, so the FIFO reads as empty rather than ended
        # before the plugin opens it; closed once the sandbox has exited.
        self._writer: int | None = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._read, name="witness-reader", daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"FORGE_WITNESS": str(self.fifo), "FORGE_WITNESS_NONCE": self.nonce}

    @property
    def argv(self) -> tuple[str, ...]:
        return ("-p", self.module)

    def _read(self) -> None:
        poller = select.poll()
        poller.register(self._reader, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            try:
                data = os.read(self._reader, 1 << 16)
            except BlockingIOError:
                continue
            if not data:
                return  # every writer has closed it: the run is over
            if self._size + len(data) > MAX_STREAM_BYTES:
                self.overflow = True  # keep draining, so a writer never blocks on us
                continue
            self._chunks.append(data)
            self._size += len(data)

    def close(self) -> bytes:
        """Stop reading (after the last lines the run wrote) and return all it wrote."""
        if self._writer is None:
            return b"".join(self._chunks)  # closed already
        os.close(self._writer)
        self._writer = None
        self._thread.join(DRAIN_S)
        if self._thread.is_alive():
            self.lingering = True
            self._stop.set()
            self._thread.join()
        os.close(self._reader)
        return b"".join(self._chunks)


@contextmanager
def witness_channel(work: Path) -> Iterator[WitnessChannel]:
    """A fresh witness folder in the worktree container `work`: the plugin under this
    run's module name, and the FIFO (mode 0666 in a 0755 folder, so the sandbox's user,
    whoever it is, can open it for writing)."""
    folder = work / FOLDER
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    folder.chmod(0o755)
    module = f"forge_witness_{secrets.token_hex(6)}"
    plugin = folder / f"{module}.py"
    shutil.copyfile(PLUGIN, plugin)
    plugin.chmod(0o444)
    os.mkfifo(folder / FIFO)
    (folder / FIFO).chmod(0o666)
    channel = WitnessChannel(folder, module)
    try:
        yield channel
    finally:
        channel.close()


def read_stream(channel: WitnessChannel) -> Stream:
    """Everything the run wrote to `channel`, parsed; call once the sandbox has ended."""
    data = channel.close()
    if channel.overflow:
        return Stream(problem=f"the result stream passed its cap of {MAX_STREAM_BYTES} bytes")
    if channel.lingering:
        return Stream(problem="a process still held the result stream after the run ended")
    return parse_stream(data, channel.nonce)


def parse_stream(data: bytes, nonce: str) -> Stream:
    """The witness's records, in order, checked for the run's nonce and an unbroken
    sequence: hello first, finish last, collected at most once."""
    if not data:
        return Stream(problem=SILENT)
    if not data.endswith(b"\n"):
        return Stream(problem="the result stream ends in the middle of a record")
    outcomes: dict[str, str] = {}
    broken: set[str] = set()
    phases: dict[tuple[str, str], str] = {}
    reported: set[str] = set()
    collected: frozenset[str] | None = None
    exitstatus: int | None = None
    lines = data.split(b"\n")[:-1]
    for seq, line in enumerate(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return Stream(problem=f"record {seq} of the result stream is not JSON")
        if not isinstance(record, dict) or record.get("nonce") != nonce:
            return Stream(problem=f"record {seq} of the result stream is not the witness's")
        if record.get("seq") != seq:
            return Stream(
                problem=f"the result stream's records are out of sequence at record {seq} "
                f"(it says {record.get('seq')!r}): something else wrote to it"
            )
        kind = record.get("kind")
        if (seq == 0) != (kind == "hello"):
            return Stream(problem=f"record {seq} of the result stream is a {kind!r} record")
        if exitstatus is not None:
            return Stream(problem="the result stream goes on after its finish record")
        try:
            if kind == "collect":
                test = junit_id(record["file"], record["classname"], record["name"])
                if record["outcome"] == "failed" and not record["classname"]:
                    broken.add(module_path(record["name"]))
                elif record["outcome"] in ("failed", "skipped"):
                    hit = "error" if record["outcome"] == "failed" else "skipped"
                    outcomes[test] = worst(outcomes.get(test), hit)
            elif kind == "collected":
                if collected is not None:
                    return Stream(problem="the result stream has two lists of collected tests")
                collected = frozenset(
                    junit_id(t["file"], t["classname"], t["name"]) for t in record["tests"]
                )
            elif kind == "test":
                test = junit_id(record["file"], record["classname"], record["name"])
                when, outcome = record["when"], record["outcome"]
                if outcome not in ("passed", "failed", "skipped"):
                    continue  # "rerun" and other plugin outcomes: not in the report either
                # A call may repeat (each subtest reports one, and xdist does not say
                # which are subtests), and so may the setup and teardown of a rerun (its
                # failed attempts are "rerun" outcomes, left out above); a setup or
                # teardown reported again with another outcome is a conflict. Added
                # calls cannot make a test look better: the worst outcome stands.
                known = phases.get((test, when))
                if known is not None and known != outcome and when != "call":
                    return Stream(
                        problem=f"the result stream reports the {when} of {test} twice, "
                        f"{known} then {outcome}"
                    )
                phases[test, when] = outcome
                reported.add(test)
                hit = _junit_outcome(when, outcome, bool(record.get("xfail")))
                if hit is not None:
                    outcomes[test] = worst(outcomes.get(test), hit)
            elif kind == "finish":
                exitstatus = int(record["exitstatus"])
            elif kind != "hello":
                return Stream(problem=f"record {seq} of the result stream has kind {kind!r}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return Stream(problem=f"record {seq} ({kind}) of the result stream is malformed: {exc}")
    return Stream(
        outcomes=outcomes,
        collection_errors=tuple(sorted(broken)),
        collected=collected,
        reported=frozenset(reported),
        exitstatus=exitstatus,
    )


def _junit_outcome(when: str, outcome: str, xfail: bool) -> str | None:
    """What pytest's junitxml plugin records for one phase report (None: nothing)."""
    if outcome == "passed":
        # A passing setup adds nothing; the teardown opens the test case if nothing did.
        return "passed" if when in ("call", "teardown") else None
    if outcome == "skipped":
        return "skipped"
    if when == "call":
        return "skipped" if xfail else "failed"
    return "error"


def cross_check(stream: Stream, report: Report | None, returncode: int) -> str:
    """Why the three channels disagree, or "" when they tell one story. `report` is None
    when pytest wrote no readable report (then only the stream and the status are
    compared, and a run that never finished is not called tampered)."""
    if stream.problem == SILENT and report is None:
        return ""  # pytest stopped before it loaded plugins (a usage error): it crashed
    if stream.problem:
        return stream.problem
    if stream.exitstatus is None:
        if report is not None and returncode in SESSION_ENDED:
            return (
                f"pytest exited {returncode} and wrote its report, but the witness never "
                "saw the session finish"
            )
        return ""
    if stream.exitstatus != returncode:
        return (
            f"pytest's session ended with status {stream.exitstatus}, "
            f"the process exited {returncode}"
        )
    if returncode == 0:
        bad = sorted(t for t, o in stream.outcomes.items() if o in ("failed", "error"))
        if bad or stream.collection_errors:
            first = bad[0] if bad else stream.collection_errors[0]
            return f"pytest exited 0 with tests that did not pass ({first})"
        if stream.collected is not None and stream.collected - stream.reported:
            missing = sorted(stream.collected - stream.reported)
            return f"{len(missing)} collected test(s) were never reported ({missing[0]})"
    if stream.collected is not None and stream.reported - stream.collected:
        extra = sorted(stream.reported - stream.collected)
        return f"{len(extra)} reported test(s) were never collected ({extra[0]})"
    if report is None:
        return ""
    if set(report.collection_errors) != set(stream.collection_errors):
        diff = sorted(set(report.collection_errors) ^ set(stream.collection_errors))
        return f"the JUnit report and the result stream disagree on collection errors ({diff[0]})"
    for test in sorted(set(report.outcomes) | set(stream.outcomes)):
        said, wrote = stream.outcomes.get(test), report.outcomes.get(test)
        if said != wrote:
            return (
                f"the JUnit report says {test} {wrote or 'is absent'}, the result stream "
                f"says {said or 'is absent'}"
            )
    return ""
