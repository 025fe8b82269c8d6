"""Run a training function in a child process, its output and progress going to a log.

Training holds gigabytes and can crash the interpreter (out of memory, a CUDA fault); in a
child it takes only itself down. The parent gets the function's result, or TrainingFailed
with the child's error and the last lines of its log. A child that was killed leaves its
run directory's checkpoints behind: calling again with the same arguments resumes the run.
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import os
import signal
import sys
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from appliance.errors import TrainingFailed

TAIL_LINES = 20


def run_in_child(fn_path: str, kwargs: dict[str, Any], log_path: Path) -> Any:
    """Call `module:function` (e.g. "appliance.training.sft:train_sft") with `kwargs` in a
    spawned child; its stdout, stderr and one progress line a step are appended to `log_path`."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main, args=(fn_path, kwargs, str(log_path), sender), name="forge-train"
    )
    child.start()
    sender.close()  # the child holds the only sending end: EOF on recv means it died
    try:
        try:
            outcome = receiver.recv()
        except EOFError:
            outcome = None
        child.join()
    finally:
        if child.is_alive():  # the parent was interrupted: don't leave the child training
            child.terminate()
            child.join()
        receiver.close()

    if outcome is not None and outcome[0] == "ok":
        return outcome[1]
    tail = _tail(log_path)
    if outcome is not None:
        _, kind, message = outcome
        what = f"{fn_path} failed: {kind}: {message}"
    else:
        code = child.exitcode
        died = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
        what = f"the process running {fn_path} died ({died})"
    raise TrainingFailed(
        f"{what}\n  last lines of {log_path}:\n" + "".join(f"    {line}" for line in tail),
        "run it again to resume from the last checkpoint, once the cause is dealt with",
    )


def _child_main(fn_path: str, kwargs: dict, log_path: str, sender) -> None:
    from appliance.childproc import die_with_parent, stop_on_sigterm

    die_with_parent()  # a killed parent must not leave this child training on its own
    stop_on_sigterm()  # SIGTERM: checkpoint the step in progress, then stop
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - open for the child's lifetime
    # Everything the child prints, C libraries included, goes to the log.
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    try:
        module_name, _, name = fn_path.partition(":")
        fn = getattr(importlib.import_module(module_name), name)
        if "on_step" in inspect.signature(fn).parameters and "on_step" not in kwargs:
            kwargs = {**kwargs, "on_step": log_step}
        print(f"forge: running {fn_path} in process {os.getpid()}", flush=True)
        result = fn(**kwargs)
    except BaseException as exc:  # reported to the parent, whatever it is
        traceback.print_exc()
        sys.stderr.flush()
        sender.send(("error", type(exc).__name__, str(exc)))
        sys.exit(1)
    print(f"forge: {fn_path} finished", flush=True)
    sender.send(("ok", result))


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
