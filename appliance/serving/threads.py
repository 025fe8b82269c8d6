"""How many threads llama.cpp gets for a call when models.toml leaves `threads = 0`: the
cores this process may use (appliance.cores) less those that other processes keep busy,
measured when the call starts.

llama.cpp's threads meet at a barrier after every layer and spin there; a thread that
another process preempts holds all the others back. On a 2-core box with one competing
busy process, two threads made 27 tokens/s where one made 47, and slowdowns of 80× were
seen with training beside generation (issue 20). So a call gets only the cores that are
free. What is free is read from the kernel's CPU times: the time the usable cores spent
busy since the last reading, less the time this process itself spent (its own decoding is
not a competitor), over the wall time between the two readings.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import psutil

from appliance import cores

FRESH_S = 0.1  # a reading's shortest window: the first call, or after a long pause
STALE_S = 2.0  # a longer window says little about now (a competitor may have just started)


@dataclass(frozen=True)
class Reading:
    at: float  # time.monotonic()
    busy_s: float  # CPU seconds the usable cores spent busy, all processes
    own_s: float  # CPU seconds this process spent


def read(cpus: frozenset[int] | None = None) -> Reading:
    cpus = cpus if cpus is not None else frozenset(psutil.Process().cpu_affinity())
    per_cpu = psutil.cpu_times(percpu=True)
    busy = sum(_busy(per_cpu[i]) for i in cpus if i < len(per_cpu))
    own = psutil.Process().cpu_times()
    return Reading(time.monotonic(), busy, own.user + own.system)


def _busy(times) -> float:
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def others(before: Reading, after: Reading) -> float:
    """How many cores' worth other processes kept busy between the two readings."""
    wall = after.at - before.at
    if wall <= 0:
        return 0.0
    return max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall


def free_cores(usable: int, before: Reading, after: Reading) -> int:
    """Threads for the next call: the usable cores less the others' load between the two
    readings, rounded to the nearest core; at least 1."""
    return max(1, min(usable, math.floor(usable - others(before, after) + 0.5)))


class FreeCores:
    """Called when a call starts: the thread count to give it (thread-safe)."""

    def __init__(self) -> None:
        self._last: Reading | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int:
        usable = cores.usable()
        with self._lock:
            last = self._last
            if last is None or time.monotonic() - last.at > STALE_S:
                last = read()
                time.sleep(FRESH_S)
            now = read()
            self._last = now
        return free_cores(usable, last, now)
