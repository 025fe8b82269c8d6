"""Rolling checkpoints of a training run: `run_dir/checkpoints/step-K`, newest `keep` kept.

A checkpoint is written into a temporary directory beside the others and renamed into place,
so a process killed mid-write leaves either the whole checkpoint or none. It holds what an
exact resume needs: `state.pt` (adapter weights, optimizer, loss scaler and Grokfast EMA
where used, RNG states) and `trainer.json` (step, rows consumed, LR scale, recoveries, and
the run's fingerprint, which says which settings and rows the run was started with).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ForgeError

STATE = "state.pt"
INFO = "trainer.json"
NAME = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    info: dict


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """The complete checkpoints of a run, oldest first."""
    found = []
    root = checkpoint_dir(run_dir)
    for path in root.iterdir() if root.is_dir() else []:
        match = NAME.match(path.name)
        if match and (path / INFO).is_file() and (path / STATE).is_file():
            try:
                info = json.loads((path / INFO).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ForgeError(
                    f"checkpoint {path} has an unreadable {INFO}: {exc}",
                    "remove that checkpoint directory; the run resumes from the one before",
                ) from exc
            found.append(Checkpoint(path, int(match[1]), info))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: Path, step: int, info: dict, state: dict, keep: int) -> Path:
    """Write step-`step` atomically (replacing one of the same step), then drop all but the
    newest `keep`."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step-*.tmp"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step}"
    staging = Path(tempfile.mkdtemp(prefix=f".step-{step}.", suffix=".tmp", dir=root))
    try:
        torch.save(state, staging / STATE)
        (staging / INFO).write_text(json.dumps({**info, "step": step}, indent=2) + "\n")
        if final.exists():  # a rollback redid this step: the new one wins
            old = staging.with_name(f".step-{step}.old.tmp")
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old)
        else:
            staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    for checkpoint in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(checkpoint.path)
    return final


def load_state(checkpoint: Checkpoint, device: str) -> dict:
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    try:
        return torch.load(checkpoint.path / STATE, map_location=device, weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ForgeError(
            f"checkpoint {checkpoint.path} cannot be read: {exc}",
            "remove that checkpoint directory; the run resumes from the one before",
        ) from exc
