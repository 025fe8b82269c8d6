"""The pool's thread count with `threads = 0` in models.toml: the cores this process may
use, less those other processes keep busy, read from the kernel when a call starts."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import psutil
import pytest

from appliance.config import FORGE_ROOT
from appliance.models.manifest import read_manifest
from appliance.serving import threads
from appliance.serving.calllog import CallLog
from appliance.serving.pool import ModelPool
from appliance.serving.threads import Reading
from appliance.store import connect

MANIFEST = FORGE_ROOT / "models" / "models.toml"


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_another_process_on_our_core_counts_and_our_own_work_does_not():
    """Whatever else the machine runs: the others' share is at least what a spinner on our
    core got, and our own busy loop is left out of it (the two never add up to more than
    the one core)."""
    core = min(os.sched_getaffinity(0))
    cpus = frozenset({core})
    spin = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
    spinner = psutil.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # it is spinning
        before, spun = threads.read(cpus), _cpu_s(spinner)
        time.sleep(0.6)
        after, spun = threads.read(cpus), _cpu_s(spinner) - spun
    finally:
        spinner.kill()
        spinner.wait()
    assert threads.others(before, after) >= spun / (after.at - before.at) - 0.1 > 0.5

    me = psutil.Process()
    before, mine = threads.read(cpus), _cpu_s(me)
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # this process busy on the core
        pass
    after, mine = threads.read(cpus), _cpu_s(me) - mine
    wall = after.at - before.at
    assert mine / wall > 0.3  # it did get the core, at least in part
    assert threads.others(before, after) + mine / wall < 1.1


@pytest.mark.parametrize(
    ("busy_s", "own_s", "usable", "expected"),
    [
        (0.0, 0.0, 2, 2),  # idle: every usable core
        (2.0, 2.0, 2, 2),  # busy with our own decoding: not a competitor
        (1.0, 0.0, 2, 1),  # one core taken by another process
        (0.4, 0.0, 2, 2),  # a light competitor: rounds to none
        (1.9, 0.0, 2, 1),  # both taken: still one thread, never none
        (3.0, 1.0, 8, 6),
    ],
)
def test_free_cores_is_the_usable_cores_less_the_others_load(busy_s, own_s, usable, expected):
    before = Reading(at=100.0, busy_s=50.0, own_s=10.0)
    after = Reading(at=101.0, busy_s=50.0 + busy_s, own_s=10.0 + own_s)
    assert threads.free_cores(usable, before, after) == expected


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "forge.db"
    connect(path).conn.close()
    return path


def _context_threads(pool: ModelPool, role: str) -> int:
    import llama_cpp

    return llama_cpp.llama_n_threads(pool.base_for(role).llm.ctx)


def test_on_one_usable_core_a_call_runs_one_thread_and_the_log_says_so(db_path):
    manifest = read_manifest(MANIFEST)
    assert manifest.for_role("coder").threads == 0  # the shipped default: free cores
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mask)})
    try:
        pool = ModelPool(manifest, log=CallLog(db_path), gpus=[])
        result = pool.complete("coder", "def add(a, b):", max_tokens=8)
    finally:
        os.sched_setaffinity(0, mask)
    try:
        assert _context_threads(pool, "coder") == 1
        (extra,) = (
            connect(db_path)
            .execute("SELECT extra FROM model_calls WHERE id = ?", [result.call_id])
            .fetchone()
        )
        assert json.loads(extra) == {"threads": 1}
    finally:
        pool.close()


def test_a_fixed_thread_count_is_kept_whatever_the_load():
    manifest = read_manifest(MANIFEST)
    spec = dataclasses.replace(manifest.for_role("coder"), threads=3)
    pool = ModelPool(dataclasses.replace(manifest, bases=(spec,)), log=None, gpus=[])
    try:
        pool.complete("coder", "def add(a, b):", max_tokens=4)
        assert pool.base_for("coder").free_cores is None
        assert _context_threads(pool, "coder") == 3
    finally:
        pool.close()
