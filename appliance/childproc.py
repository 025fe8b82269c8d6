"""Child processes that neither outlive their parent nor lose work on SIGTERM.

A process killed with SIGKILL (the OOM killer, `kill -9`, a power cut of the daemon)
cannot clean up after itself, so each child asks the kernel to kill it when its parent
dies (PR_SET_PDEATHSIG): nothing is left running that the next daemon would run again.
SIGTERM is the polite stop: heavy work sets STOP and finishes the step it is in, writes
its checkpoint and raises Stopped; the next run resumes from that checkpoint.

Child runs a function in a spawned child process (the daemon's heavy jobs, the training
child): its stdout and stderr, C libraries' included, go to a log file, and what it
returns or raises comes back through a pipe as a frozen record (Returned, Raised).

run_command runs an operator's program (the alert hook): no shell, input on stdin, a
timeout after which its whole process group is killed, and it too dies with its parent.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.errors import ForgeError

STOP = threading.Event()
PR_SET_PDEATHSIG = 1


class Stopped(BaseException):
    """The work was asked to stop (SIGTERM) and stopped at a checkpoint. Like
    KeyboardInterrupt it is no Exception, so no `except Exception` (a campaign unit's, a
    cycle step's) swallows it and goes on working."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def die_with_parent(parent: int | None = None) -> None:
    """Be killed (SIGKILL) when the parent process dies; exit now if it already has.

    `parent` is the pid of the process that started this one, as that process gave it: a
    parent that died while this process was still starting (unpickling its arguments) is
    then told apart from the process that adopted it. Without it, only a death from here
    on is caught."""
    parent = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


def stop_on_sigterm() -> None:
    """SIGTERM sets STOP; work that checks it checkpoints and raises Stopped."""
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())


def raise_on_sigterm() -> None:
    """SIGTERM raises Stopped in the main thread (so `finally` blocks run: the training
    child is asked to stop in turn, sandboxes are killed), and sets STOP."""

    def handler(*_):
        STOP.set()
        raise Stopped("stopped by SIGTERM", "run it again: it resumes from its checkpoints")

    signal.signal(signal.SIGTERM, handler)


# --- a function in a child process ---------------------------------------------------------


@dataclass(frozen=True)
class Returned:
    """The child's function returned `value`."""

    value: Any


@dataclass(frozen=True)
class Raised:
    """The child's function raised; its traceback, unless expected, is in the log."""

    type: str  # the exception's class name
    text: str  # str(exception): a ForgeError's message and hint
    message: str | None  # a ForgeError's or Stopped's message (no hint); None for others
    stopped: bool  # it was Stopped: the work checkpointed and may resume

    def reason(self) -> str:
        """Why, for a job's record: a ForgeError's message, else "Type: text"."""
        return self.message if self.message is not None else f"{self.type}: {self.text}"


Outcome = Returned | Raised


def raised(exc: BaseException) -> Raised:
    """The record of `exc`."""
    message = exc.message if isinstance(exc, ForgeError | Stopped) else None
    return Raised(type(exc).__name__, str(exc), message, isinstance(exc, Stopped))


class Child:
    """`target(*args)` in a spawned child process (no fork: the parent may hold threads).

    The child dies with its parent; SIGTERM sets STOP ("stop") or also raises Stopped in its
    main thread ("raise"); `env` is set in it first; its output is appended to `log_path`.
    An exception of a type in `expected` has its own line in the log, written by the target
    itself; any other gets its traceback there. `target` must be a module-level function."""

    def __init__(
        self,
        target: Callable[..., Any],
        args: tuple,
        log_path: Path | str,
        *,
        name: str,
        on_sigterm: Literal["stop", "raise"] = "stop",
        env: dict[str, str] | None = None,
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_child_main,
            args=(
                target,
                args,
                str(log_path),
                on_sigterm,
                env or {},
                expected,
                os.getpid(),
                sender,
            ),
            name=name,
        )
        self.process.start()
        sender.close()  # the child holds the only sending end: EOF means it died

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def terminate(self) -> None:
        """SIGTERM: the child checkpoints the step it is in and stops."""
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def join(self, timeout: float | None = None) -> None:
        self.process.join(timeout)

    def outcome(self) -> Outcome | None:
        """What the child sent, without waiting; None if it sent nothing (yet, or ever:
        it died first)."""
        try:
            return self._receiver.recv() if self._receiver.poll() else None
        except EOFError:  # it died without a word
            return None

    def wait(self) -> Outcome | None:
        """Wait for the child to end; what it sent, or None if it died first. If the wait
        is interrupted (SIGTERM's Stopped, Ctrl-C), the child is stopped too."""
        try:
            try:
                outcome = self._receiver.recv()
            except EOFError:
                outcome = None
            self.process.join()
        finally:
            if self.process.is_alive():  # the parent was interrupted: don't leave it working
                self.process.terminate()
                self.process.join()
            self._receiver.close()
        return outcome

    def died(self) -> str:
        """How the child's process ended: "signal SIGKILL", "exit 1"."""
        code = self.process.exitcode
        return f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"


def _child_main(target, args, log_path, on_sigterm, env, expected, parent, sender) -> None:
    die_with_parent(parent)  # a killed parent must not leave this child working on its own
    if on_sigterm == "raise":
        raise_on_sigterm()  # the step in progress checkpoints, then Stopped unwinds
    else:
        stop_on_sigterm()  # the work checks STOP: it checkpoints, then stops
    os.environ.update(env)  # e.g. this job's GPU, before torch loads
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the child's lifetime
    # Everything the child prints, C libraries included, goes to the log.
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    try:
        result = target(*args)
    except BaseException as exc:  # reported to the parent, whatever it is
        if not isinstance(exc, expected):
            traceback.print_exc()
        sys.stderr.flush()
        sender.send(raised(exc))
        sys.exit(1)
    sender.send(Returned(result))


# --- an operator's command -----------------------------------------------------------------

OUTPUT_LIMIT = 4096  # of what a hook prints, kept for the journal


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: its exit status (None: killed at its timeout) and the end of
    what it printed."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_command(argv: list[str], stdin: bytes, timeout_s: float) -> CommandResult:
    """Run `argv` (no shell) with `stdin`; stdout and stderr together, the last
    OUTPUT_LIMIT bytes kept. Its process group is killed at `timeout_s`; it dies with
    this process. A program that cannot be started is a ForgeError."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: after fork, only a call is safe

    def with_parent() -> None:  # in the child, before exec
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the timeout kills all of it
            preexec_fn=with_parent,
        )
    except OSError as exc:
        raise ForgeError(
            f"cannot run {argv[0]!r}: {exc.strerror}", "give the full path of a program"
        ) from exc
    try:
        out, _ = proc.communicate(stdin, timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    text = out[-OUTPUT_LIMIT:].decode("utf-8", "replace")
    return CommandResult(tuple(argv), None if timed_out else proc.returncode, text, timed_out)
