"""Fault points for the chaos test and bench/chaos.py: test-only, no part of Forge.

A Python process started with this folder first on PYTHONPATH and FORGE_FAULTS naming a
folder (bench/faults/__init__.py sets both for the daemon the driver starts) wraps the
functions named in POINTS when their modules are imported: in forged and in every job
process it spawns, which inherit the environment. A point does nothing until the driver
arms it (an empty file FORGE_FAULTS/armed/NAME). The first process to pass an armed point
claims it, writes FORGE_FAULTS/inside.json (the point, its process id, where exactly it
stands) and waits there, right after the wrapped function returned and before its caller
goes on, for the driver's SIGKILL (or for inside.json to be removed: released). Forge's
own modules read no variable and take no parameter for any of this.
"""

from __future__ import annotations

import functools
import importlib.machinery
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV = "FORGE_FAULTS"
INSIDE = "inside.json"
HOLD_S = 600.0  # the longest a point waits for its kill; then the work goes on


@dataclass(frozen=True)
class Point:
    """A place to stop at: right after `module.function` returns, when `applies` to the
    call's arguments (by name). `phase` and `where` say, from those arguments, where a kill
    held there lands: a short name, and the whole story."""

    name: str
    module: str
    function: str
    applies: Callable[[dict], bool]
    phase: Callable[[dict], str]
    where: Callable[[dict], str]


def _registry_where(call: dict) -> str:
    why = "forced by the operator" if call["forced"] else "the gate's decision"
    return (
        f"inside registry.{call['action']}'s transaction for {call['stage']}-v"
        f"{call['to_version']} ({why}): statuses changed and the event written, not committed"
    )


POINTS = (
    # datasets.versions.build writes the version's JSONL between inserting its rows and
    # inserting the version row, all in one transaction.
    Point(
        "dataset-build",
        "appliance.datasets.versions",
        "_write_jsonl",
        applies=lambda call: True,
        phase=lambda call: "datasets",
        where=lambda call: (
            f"inside datasets.build's transaction for {call['stage']} {call['kind']} "
            f"v{call['version']}: rows inserted and the JSONL written, the version row not "
            "yet, not committed"
        ),
    ),
    # registry.promote and registry.reject log their event last, before the commit.
    Point(
        "registry-change",
        "appliance.registry.registry",
        "log_event",
        applies=lambda call: call["action"] in ("promote", "reject"),
        phase=lambda call: call["action"],
        where=_registry_where,
    ),
)


class _Finder:
    """Finds a watched module as the import system would, and wraps its points right
    after the module's own code ran."""

    def find_spec(self, fullname, path, target=None):
        points = [p for p in POINTS if p.module == fullname]
        if not points:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for point in points:
                _wrap(module, point)

        spec.loader.exec_module = exec_module
        return spec


def _wrap(module, point: Point) -> None:
    fn = getattr(module, point.function)
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        result = fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        call = dict(bound.arguments)
        if point.applies(call) and _claim(point):
            _hold(point, call, sys._getframe(1))
        return result

    setattr(module, point.function, wrapped)


def _claim(point: Point) -> bool:
    """Whether this process takes the armed point (a rename: one process wins)."""
    folder = Path(os.environ[ENV])
    try:
        os.rename(folder / "armed" / point.name, folder / "claimed" / f"{point.name}.{os.getpid()}")
    except FileNotFoundError:  # not armed (or another process was first)
        return False
    return True


def _hold(point: Point, call: dict, caller) -> None:
    folder = Path(os.environ[ENV])
    marker = {
        "point": point.name,
        "pid": os.getpid(),
        "phase": point.phase(call),
        "where": point.where(call),
        "transaction_open": _transaction_open(call, caller),
    }
    tmp = folder / f".inside.{os.getpid()}"
    tmp.write_text(json.dumps(marker))
    tmp.replace(folder / INSIDE)
    deadline = time.monotonic() + HOLD_S
    while time.monotonic() < deadline and (folder / INSIDE).exists():
        time.sleep(0.05)
    (folder / INSIDE).unlink(missing_ok=True)


def _transaction_open(call: dict, caller) -> bool | None:
    """Whether the SQLite connection in the call's arguments, or else in its caller's
    variables, is inside a transaction now (None: no connection in sight)."""
    for value in [*call.values(), *caller.f_locals.values()]:
        # A DB-API connection of sqlite3 or pysqlite3 (Forge uses either): duck-typed.
        if isinstance(getattr(value, "in_transaction", None), bool):
            return value.in_transaction
    return None


if os.environ.get(ENV) and __name__ == "sitecustomize":  # not when imported by the driver
    sys.meta_path.insert(0, _Finder())
