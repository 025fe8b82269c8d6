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

    `on_busy`, when given, hears what each device works on ({device: unit, or None when
    idle}) each time that changes, in the thread that iterates `run` (so it may write to
    that thread's database connection): the dashboard shows each GPU's worker with it.

    Processes are spawned, not forked: a CUDA context must never be inherited."""

    def __init__(
        self, devices: Sequence[str], on_busy: Callable[[dict[str, object]], None] | None = None
    ) -> None:
        if not devices:
            raise ValueError("a device executor needs at least one device")
        self.devices = list(devices)
        self.on_busy = on_busy

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
            threading.Thread(target=_feed, args=(device, pool, work, done, stop), daemon=True)
            for device, pool in zip(self.devices, pools, strict=True)
        ]
        for feeder in feeders:
            feeder.start()
        busy: dict[str, object] = dict.fromkeys(self.devices)
        try:
            finished = 0
            while finished < len(units):
                event, device, value = done.get()
                if event == "failed":
                    raise value
                busy[device] = value if event == "started" else None
                if self.on_busy is not None:
                    self.on_busy(dict(busy))
                if event == "done":
                    finished += 1
                    yield value
        finally:
            stop.set()
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)


def _feed(device: str, pool: ProcessPoolExecutor, work: queue.Queue, done: queue.Queue,
          stop) -> None:  # fmt: skip
    """One device's loop: take the next unit, run it on the device, hand back the result
    (events: ("started", device, unit), ("done", device, result), ("failed", device, exc))."""
    while not stop.is_set():
        try:
            unit = work.get_nowait()
        except queue.Empty:
            return
        done.put(("started", device, unit))
        try:
            done.put(("done", device, pool.submit(_call, unit).result()))
        except BaseException as exc:  # the caller re-raises it
            done.put(("failed", device, exc))
            return


def _init_device(device: str, make_worker) -> None:
    os.environ["FORGE_WORKER_DEVICE"] = device
    # A CPU stand-in sees no GPU; a GPU worker sees only its own.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if device.startswith("cpu") else device
    _init(make_worker)


def worker_device() -> str:
    """The device this process works on for a DeviceExecutor ("" when none was given)."""
    return os.environ.get("FORGE_WORKER_DEVICE", "")
