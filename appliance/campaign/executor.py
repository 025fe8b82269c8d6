"""Where campaign units run. Campaigns only see this interface, so running them on other
boxes later is a new executor, not a rewrite of the campaign."""

from __future__ import annotations

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
