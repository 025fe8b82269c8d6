"""The CPU cores this process may use: its affinity mask (taskset, a cgroup's cpuset,
systemd's CPUAffinity=), which can be fewer than the machine's cores. Thread counts left
at 0 ("all cores") mean these, so that a process confined to one core does not start a
thread per machine core and spin them against each other."""

from __future__ import annotations

import os


def usable() -> int:
    return len(os.sched_getaffinity(0)) or 1
