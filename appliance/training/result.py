"""What a training run hands back, and what it records for each optimizer step: its
metrics.jsonl, one StepRecord a line plus "event" lines (resumed, recovered), each with the
step it belongs to."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step: a line of the run's metrics.jsonl (the loss curve)."""

    step: int
    total_steps: int
    loss: float  # mean over the completion tokens of the step
    lr: float
    grad_norm: float | None  # before clipping; None where fp16 loss scaling overflowed
    tokens: int  # tokens through the model in this step, prompt and completion
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """A finished run (SFT or DPO)."""

    adapter_dir: Path  # PEFT save_pretrained output
    steps: int
    final_loss: float
    tokens_per_s: float  # tokens trained by this call ÷ its wall time, checkpoints included
    peak_memory_bytes: int  # peak RSS on CPU, torch.cuda.max_memory_allocated on CUDA
    recoveries: int  # NaN/inf rollbacks over the whole run
    resumed_from: int | None  # the checkpoint step this call continued from
    device: str  # DeviceChoice.reason
    heldout_loss: float | None = None  # mean completion-token loss on held-out rows
    heldout_loss_base: float | None = None  # the same with the adapter disabled
    margin_before: float | None = None  # DPO: mean log p(chosen) − log p(rejected)
    margin_after: float | None = None


def append_metrics(path: Path, line: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


def begin_metrics(path: Path, resumed_from: int | None) -> None:
    """Open a run's metrics.jsonl for this call: the lines after the checkpoint it resumes
    from go (those steps are redone), and a "resumed" event marks where it continued."""
    truncate_metrics(path, resumed_from or 0)
    if resumed_from is not None:
        append_metrics(path, {"event": "resumed", "step": resumed_from})


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines after `step`: the steps a rollback or a resume is about to redo."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(path)


def last_loss(path: Path) -> float:
    """The loss of the last step in a metrics.jsonl (NaN if it has none)."""
    if not path.is_file():
        return math.nan
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    losses = [line["loss"] for line in lines if "event" not in line]
    return losses[-1] if losses else math.nan
