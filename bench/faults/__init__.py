"""The driver's side of the fault points (sitecustomize.py here says how they work):
start a process with `FaultPoints(folder).env(...)`, `arm` a point, `wait_inside` until a
process stands in it, kill that process (or forged, its parent), then `clear`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.faults.sitecustomize import ENV, INSIDE, POINTS

HERE = Path(__file__).resolve().parent
NAMES = tuple(p.name for p in POINTS)


@dataclass(frozen=True)
class Inside:
    """A process standing at a point, waiting for its kill."""

    point: str
    pid: int
    phase: str  # a short name: datasets, promote, reject
    where: str  # where a kill now lands, in words
    transaction_open: bool | None  # its SQLite connection's, None if it has none in sight


class FaultPoints:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        for sub in ("armed", "claimed"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with the fault points switched on for the processes started with it."""
        paths = [str(HERE), *([base["PYTHONPATH"]] if base.get("PYTHONPATH") else [])]
        return {**base, "PYTHONPATH": os.pathsep.join(paths), ENV: str(self.folder)}

    def arm(self, name: str) -> None:
        if name not in NAMES:
            raise ValueError(f"no fault point {name!r}; the points: {', '.join(NAMES)}")
        (self.folder / "armed" / name).touch()

    def disarm(self, name: str) -> None:
        (self.folder / "armed" / name).unlink(missing_ok=True)

    def inside(self) -> Inside | None:
        try:
            return Inside(**json.loads((self.folder / INSIDE).read_text()))
        except FileNotFoundError:
            return None

    def wait_inside(
        self, timeout_s: float, gone_by: Callable[[], bool] = lambda: False
    ) -> Inside | None:
        """The process that stands in a point, once one does; None after `timeout_s`, or
        once `gone_by()` says the moment has passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.inside()
            if found is not None:
                return found
            if gone_by():
                return self.inside()  # it may have arrived meanwhile
            time.sleep(0.05)
        return None

    def clear(self) -> None:
        """Forget the point a process stood in (it was killed); a live one goes on."""
        (self.folder / INSIDE).unlink(missing_ok=True)
