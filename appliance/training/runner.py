"""Run a training function in a child process, its output and progress going to a log.

Training holds gigabytes and can crash the interpreter (out of memory, a CUDA fault); in a
child it takes only itself down. The parent gets the function's result, or TrainingFailed
with the child's error and the last lines of its log. A child that was killed leaves its
run directory's checkpoints behind: calling again with the same arguments resumes the run.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections import deque
from pathlib import Path
from typing import Any

from appliance.childproc import Child, Returned
from appliance.errors import TrainingFailed

TAIL_LINES = 20


def run_in_child(fn_path: str, kwargs: dict[str, Any], log_path: Path) -> Any:
    """Call `module:function` (e.g. "appliance.training.sft:train_sft") with `kwargs` in a
    spawned child; its stdout, stderr and one progress line a step are appended to `log_path`."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child = Child(_call, (fn_path, kwargs), log_path, name="forge-train")
    outcome = child.wait()
    if isinstance(outcome, Returned):
        return outcome.value
    if outcome is not None:
        what = f"{fn_path} failed: {outcome.type}: {outcome.text}"
    else:
        what = f"the process running {fn_path} died ({child.died()})"
    raise TrainingFailed(
        f"{what}\n  last lines of {log_path}:\n"
        + "".join(f"    {line}" for line in _tail(log_path)),
        "run it again to resume from the last checkpoint, once the cause is dealt with",
    )


def _call(fn_path: str, kwargs: dict) -> Any:
    """In the child: import the function, give it the log's on_step, call it."""
    module_name, _, name = fn_path.partition(":")
    fn = getattr(importlib.import_module(module_name), name)
    if "on_step" in inspect.signature(fn).parameters and "on_step" not in kwargs:
        kwargs = {**kwargs, "on_step": log_step}
    print(f"forge: running {fn_path} in process {os.getpid()}", flush=True)
    result = fn(**kwargs)
    print(f"forge: {fn_path} finished", flush=True)
    return result


def log_step(record) -> None:
    """The progress line of one step in the log (the on_step of a child run)."""
    rate = record.tokens / record.seconds if record.seconds else 0.0
    norm = "-" if record.grad_norm is None else f"{record.grad_norm:.3f}"
    print(
        f"step {record.step}/{record.total_steps} loss {record.loss:.4f} lr {record.lr:.2e} "
        f"grad_norm {norm} tokens/s {rate:.0f}",
        flush=True,
    )


def _tail(path: Path) -> list[str]:
    try:
        with path.open(errors="replace") as fh:
            return list(deque(fh, maxlen=TAIL_LINES))
    except OSError:
        return []
