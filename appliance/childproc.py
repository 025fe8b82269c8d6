"""Child processes that neither outlive their parent nor lose work on SIGTERM.

A process killed with SIGKILL (the OOM killer, `kill -9`, a power cut of the daemon)
cannot clean up after itself, so each child asks the kernel to kill it when its parent
dies (PR_SET_PDEATHSIG): nothing is left running that the next daemon would run again.
SIGTERM is the polite stop: heavy work sets STOP and finishes the step it is in, writes
its checkpoint and raises Stopped; the next run resumes from that checkpoint.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading

STOP = threading.Event()
PR_SET_PDEATHSIG = 1


class Stopped(BaseException):
    """The work was asked to stop (SIGTERM) and stopped at a checkpoint. Like
    KeyboardInterrupt it is no Exception, so no `except Exception` (a campaign unit's, a
    cycle step's) swallows it and goes on working."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the parent process dies; exit now if it already has."""
    parent = os.getppid()
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
