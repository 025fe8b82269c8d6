"""Where campaign units run. Campaigns only see this interface, so running them on other
boxes later is a new executor, not a rewrite of the campaign."""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Protocol, TypeVar

U = TypeVar("U")
R = TypeVar("R")


class Executor(Protocol):
    def run(self, units: Sequence[U], make_worker: Callable[[], Callable[[U], R]]) -> Iterator[R]:
        """Run every unit through a worker (made once per process); yield results as they
        finish."""


class LocalExecutor:
    """Units in this process (workers=1) or in a pool of local processes, each with its
    own worker (its own model pool and database connection)."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def run(self, units, make_worker):
        if self.workers <= 1:
            worker = make_worker()
            for unit in units:
                yield worker(unit)
            return
        with ProcessPoolExecutor(
            max_workers=self.workers, initializer=_init, initargs=(make_worker,)
        ) as pool:
            futures = [pool.submit(_call, unit) for unit in units]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise


_worker = None


def _init(make_worker) -> None:
    global _worker
    _worker = make_worker()


def _call(unit):
    return _worker(unit)


class DeviceExecutor:
    """One worker process per device, each seeing only its own: a GPU as
    CUDA_VISIBLE_DEVICES names it ("0", "1", …), or a CPU stand-in ("cpu0", "cpu1", …:
    no GPU at all, the same code path). Units wait in one queue; each device's process
    takes the next one as soon as it is free, so a slow unit never holds back the others.
    Every unit runs once, on one device; results come back as they finish. The worker
    reads its device from FORGE_WORKER_DEVICE.

    Processes are spawned, not forked: a CUDA context must never be inherited."""

    def __init__(self, devices: Sequence[str]) -> None:
        if not devices:
            raise ValueError("a device executor needs at least one device")
        self.devices = list(devices)

    def run(self, units, make_worker):
        work: queue.Queue = queue.Queue()
        for unit in units:
            work.put(unit)
        done: queue.Queue = queue.Queue()
        context = multiprocessing.get_context("spawn")
        pools = [
            ProcessPoolExecutor(1, mp_context=context, initializer=_init_device,
                                initargs=(device, make_worker))
            for device in self.devices
        ]  # fmt: skip
        stop = threading.Event()
        feeders = [
            threading.Thread(target=_feed, args=(pool, work, done, stop), daemon=True)
            for pool in pools
        ]
        for feeder in feeders:
            feeder.start()
        try:
            for _ in range(len(units)):
                failed, value = done.get()
                if failed:
                    raise value
                yield value
        finally:
            stop.set()
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)


def _feed(pool: ProcessPoolExecutor, work: queue.Queue, done: queue.Queue, stop) -> None:
    """One device's loop: take the next unit, run it on the device, hand back the result."""
    while not stop.is_set():
        try:
            unit = work.get_nowait()
        except queue.Empty:
            return
        try:
            done.put((False, pool.submit(_call, unit).result()))
        except BaseException as exc:  # the caller re-raises it
            done.put((True, exc))
            return


def _init_device(device: str, make_worker) -> None:
    os.environ["FORGE_WORKER_DEVICE"] = device
    # A CPU stand-in sees no GPU; a GPU worker sees only its own.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if device.startswith("cpu") else device
    _init(make_worker)


def worker_device() -> str:
    """The device this process works on for a DeviceExecutor ("" when none was given)."""
    return os.environ.get("FORGE_WORKER_DEVICE", "")
