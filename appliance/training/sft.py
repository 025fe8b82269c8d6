"""LoRA SFT: one training run, top to bottom, in plain PyTorch.

Loss on the completion tokens only; AdamW, warmup then cosine (or linear, constant),
gradient accumulation, clipping. Rolling checkpoints let a killed run resume exactly where
its last checkpoint left it (same data order, same schedule); a watchdog rolls back to the
last good checkpoint with a tenth of the learning rate when the loss or gradient norm stops
being finite, and gives up after `max_recoveries`.

A run directory holds:
    checkpoints/step-K/   rolling checkpoints (checkpoints.py)
    metrics.jsonl         the loss curve, one StepRecord a line, plus "event" lines
    adapter/              the finished adapter (PEFT save_pretrained)
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.childproc import STOP, Stopped
from appliance.config import TrainingSettings
from appliance.errors import ForgeError, TrainingFailed
from appliance.models.hf_base import read_base_info
from appliance.training.batches import (
    check_sft_rows,
    encode_sft_row,
    pad_batch,
    planned_steps,
    rows_for_step,
)
from appliance.training.checkpoints import (
    Checkpoint,
    latest_checkpoint,
    load_state,
    save_checkpoint,
)
from appliance.training.devices import DeviceChoice, choose_device, torch_threads
from appliance.training.lora import (
    autocast,
    completion_loss,
    lora_model,
    peak_memory_bytes,
    save_adapter,
)
from appliance.training.result import (
    StepRecord,
    TrainResult,
    append_metrics,
    begin_metrics,
    last_loss,
    truncate_metrics,
)

METRICS = "metrics.jsonl"
ADAPTER = "adapter"
# Settings that may change between a run and its resumption without changing what it learns.
RESUMABLE_CHANGES = {"threads", "checkpoint_every", "keep_checkpoints", "max_recoveries"}


def train_sft(
    run_dir: Path,
    base_dir: Path,
    rows: list[dict],
    settings: TrainingSettings,
    *,
    heldout: list[dict] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `rows` ({"messages", "completion"}) into `run_dir`.

    Continues from run_dir's newest checkpoint when there is one. `on_step` sees each
    StepRecord after it is logged and checkpointed.
    """
    run_dir, base_dir = Path(run_dir), Path(base_dir)
    check_sft_rows(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    if heldout:
        check_sft_rows(heldout, "heldout rows")
    with torch_threads(settings.threads):
        return _train(run_dir, base_dir, rows, settings, heldout, on_step)


@dataclass(frozen=True)
class _Run:
    """What one run works with, made once: the model with its adapter, the encoded rows,
    the plan, and what a rollback goes back to when no checkpoint exists yet."""

    run_dir: Path
    settings: TrainingSettings
    fingerprint: str
    choice: DeviceChoice
    model: Any
    tokenizer: Any
    encoded: list
    pad_id: int
    total_steps: int
    params: list
    initial_adapter: dict
    scaler: Any  # a torch GradScaler with fp16, else None

    @property
    def metrics(self) -> Path:
        return self.run_dir / METRICS


@dataclass
class _Position:
    """Where the run stands: what a checkpoint saves and a rollback restores."""

    step: int
    optimizer: Any
    ema: Any  # Grokfast's gradient average, or None
    lr_scale: float
    recoveries: int


def _train(run_dir, base_dir, rows, settings, heldout, on_step) -> TrainResult:
    fingerprint = _fingerprint(base_dir, rows, settings)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and checkpoint.info.get("fingerprint") != fingerprint:
        raise ForgeError(
            f"{run_dir} holds a run with other rows, base or settings "
            f"(checkpoint {checkpoint.path.name})",
            "use a new run directory, or remove its checkpoints to start over",
        )
    run = _prepare(run_dir, base_dir, rows, settings, fingerprint)
    # Resume from the newest checkpoint, if the run has one.
    step, optimizer, ema, info = _restore(run, checkpoint)
    at = _Position(step, optimizer, ema, info.get("lr_scale", 1.0), info.get("recoveries", 0))
    resumed_from = checkpoint.step if checkpoint else None
    begin_metrics(run.metrics, resumed_from)

    run.model.train()
    started = time.perf_counter()
    tokens_trained = 0
    record = None
    while at.step < run.total_steps:
        step_started = time.perf_counter()
        lr = settings.lr * at.lr_scale * lr_factor(at.step, run.total_steps, settings)
        loss_value, grad_norm, tokens = _forward_backward(run, at, lr)
        # Watchdog. With fp16 loss scaling an infinite gradient is an overflow the scaler
        # handles by skipping the step; a non-finite loss is always divergence.
        if not math.isfinite(loss_value) or (run.scaler is None and not math.isfinite(grad_norm)):
            at = _recover(run, at, loss_value, grad_norm)
            continue
        _optimizer_step(run, at)
        at.step += 1
        tokens_trained += tokens
        record = StepRecord(
            step=at.step,
            total_steps=run.total_steps,
            loss=loss_value,
            lr=lr,
            grad_norm=grad_norm if math.isfinite(grad_norm) else None,
            tokens=tokens,
            seconds=time.perf_counter() - step_started,
        )
        append_metrics(run.metrics, asdict(record))
        stopping = STOP.is_set()  # SIGTERM: checkpoint this step, then stop
        if at.step % settings.checkpoint_every == 0 or at.step == run.total_steps or stopping:
            _checkpoint(run, at)
        if on_step is not None:
            on_step(record)
        if stopping and at.step < run.total_steps:
            raise Stopped(f"training stopped at step {at.step} of {run.total_steps}, "
                          "checkpointed", "run it again: it resumes from that step")  # fmt: skip
    tokens_per_s = tokens_trained / (time.perf_counter() - started)
    return _finish(run, at, record, heldout, tokens_per_s, resumed_from)


def _prepare(run_dir, base_dir, rows, settings, fingerprint) -> _Run:
    """Load the base with a fresh adapter and encode the rows."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch
    from peft import get_peft_model_state_dict

    choice = choose_device()
    model, tokenizer = lora_model(base_dir, settings, choice)
    encoded = [encode_sft_row(tokenizer, row, settings.max_seq_len) for row in rows]
    total_steps = planned_steps(
        len(rows), settings.epochs, settings.max_steps, settings.batch_size * settings.grad_accum
    )
    return _Run(
        run_dir=run_dir,
        settings=settings,
        fingerprint=fingerprint,
        choice=choice,
        model=model,
        tokenizer=tokenizer,
        encoded=encoded,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        total_steps=total_steps,
        params=[p for p in model.parameters() if p.requires_grad],
        initial_adapter={
            k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
        },
        scaler=torch.amp.GradScaler("cuda") if choice.dtype == "fp16" else None,
    )


def _restore(run: _Run, checkpoint: Checkpoint | None) -> tuple[int, Any, Any, dict]:
    """Load a checkpoint (None: the initial state); returns (step, optimizer, ema, info)."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch
    from peft import set_peft_model_state_dict

    settings, choice = run.settings, run.choice
    optimizer = torch.optim.AdamW(run.params, lr=settings.lr, weight_decay=settings.weight_decay)
    if checkpoint is None:
        set_peft_model_state_dict(run.model, run.initial_adapter)
        return 0, optimizer, None, {}
    state = load_state(checkpoint, choice.device)
    set_peft_model_state_dict(run.model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if choice.device == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
    random.setstate(_python_rng(state["rng"]["python"]))
    return checkpoint.step, optimizer, state.get("grokfast_ema"), checkpoint.info


def _forward_backward(run: _Run, at: _Position, lr: float) -> tuple[float, float, int]:
    """The gradients of one optimizer step at learning rate `lr`; (loss, gradient norm,
    tokens). grad_accum forward/backward passes, the loss normalised over all completion
    tokens of the step (so accumulation equals one big batch)."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    settings, choice, scaler = run.settings, run.choice, run.scaler
    for group in at.optimizer.param_groups:
        group["lr"] = lr
    batches = [
        pad_batch([run.encoded[i] for i in indices], run.pad_id, choice.device)
        for indices in rows_for_step(
            at.step, len(run.encoded), settings.batch_size, settings.grad_accum, settings.seed
        )
    ]
    step_targets = sum(int((b["labels"] != -100).sum()) for b in batches)
    loss_value = 0.0
    tokens = 0
    for batch in batches:
        with autocast(choice):
            loss_sum, _ = completion_loss(run.model, batch)
        loss = loss_sum / step_targets
        (scaler.scale(loss) if scaler else loss).backward()
        loss_value += loss.item()
        tokens += batch["tokens"]
    if scaler is not None:
        scaler.unscale_(at.optimizer)
    if settings.grokfast:
        at.ema = grokfast_filter(
            run.params, at.ema, settings.grokfast_alpha, settings.grokfast_lambda
        )
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.params, settings.max_grad_norm))
    return loss_value, grad_norm, tokens


def _recover(run: _Run, at: _Position, loss_value: float, grad_norm: float) -> _Position:
    """Roll back to the last good checkpoint with a tenth of the learning rate, or give up
    after `max_recoveries`."""
    settings = run.settings
    at.optimizer.zero_grad(set_to_none=True)
    recoveries = at.recoveries + 1
    if recoveries > settings.max_recoveries:
        raise TrainingFailed(
            f"training diverged at step {at.step + 1} of {run.total_steps} (loss {loss_value}, "
            f"gradient norm {grad_norm}) after {settings.max_recoveries} recoveries, "
            f"the learning rate already down to {at.lr_scale:g} × {settings.lr:g}",
            f"lower training.lr, check the rows for garbage, or see {run.metrics}",
        )
    failed_step = at.step + 1
    step, optimizer, ema, _ = _restore(run, latest_checkpoint(run.run_dir))
    lr_scale = at.lr_scale / 10
    truncate_metrics(run.metrics, step)
    append_metrics(
        run.metrics,
        {
            "event": "recovered",
            "step": step,
            "failed_step": failed_step,
            "loss": loss_value if math.isfinite(loss_value) else str(loss_value),
            "lr_scale": lr_scale,
            "recoveries": recoveries,
        },
    )
    return _Position(step, optimizer, ema, lr_scale, recoveries)


def _optimizer_step(run: _Run, at: _Position) -> None:
    if run.scaler is not None:
        run.scaler.step(at.optimizer)
        run.scaler.update()
    else:
        at.optimizer.step()
    at.optimizer.zero_grad(set_to_none=True)


def _checkpoint(run: _Run, at: _Position) -> None:
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch
    from peft import get_peft_model_state_dict

    settings = run.settings
    state = {
        "adapter": get_peft_model_state_dict(run.model),
        "optimizer": at.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "grokfast_ema": at.ema,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if run.choice.device == "cuda" else None,
            "python": random.getstate(),
        },
    }
    info = {
        "rows_seen": at.step * settings.batch_size * settings.grad_accum,
        "total_steps": run.total_steps,
        "lr_scale": at.lr_scale,
        "recoveries": at.recoveries,
        "fingerprint": run.fingerprint,
    }
    save_checkpoint(run.run_dir, at.step, info, state, settings.keep_checkpoints)


def _finish(run: _Run, at: _Position, record, heldout, tokens_per_s, resumed_from) -> TrainResult:
    """Save the adapter; measure the held-out loss with it and without it."""
    settings, choice = run.settings, run.choice
    adapter_dir = save_adapter(run.model, run.run_dir / ADAPTER)
    heldout_loss = heldout_base = None
    if heldout:
        held = [encode_sft_row(run.tokenizer, row, settings.max_seq_len) for row in heldout]
        heldout_loss = mean_loss(run.model, held, settings.batch_size, run.pad_id, choice)
        with run.model.disable_adapter():
            heldout_base = mean_loss(run.model, held, settings.batch_size, run.pad_id, choice)
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=at.step,
        final_loss=record.loss if record else last_loss(run.metrics),
        tokens_per_s=tokens_per_s,
        peak_memory_bytes=peak_memory_bytes(choice),
        recoveries=at.recoveries,
        resumed_from=resumed_from,
        device=choice.reason,
        heldout_loss=heldout_loss,
        heldout_loss_base=heldout_base,
    )


def lr_factor(step: int, total_steps: int, settings: TrainingSettings) -> float:
    """The learning rate of 0-based `step` as a share of the peak: linear warmup, then decay."""
    warmup = math.ceil(settings.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if settings.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if settings.schedule == "linear":
        return 1.0 - progress
    return 1.0


def grokfast_filter(params, ema, alpha: float, lamb: float):
    """Grokfast-EMA (Lee et al. 2024): amplify the slow part of the gradient,
    g ← g + λ·EMA_α(g). Returns the updated EMA (a list, one tensor per parameter)."""
    grads = [p.grad for p in params]
    if ema is None:
        ema = [g.detach().clone() for g in grads]
    else:
        for average, g in zip(ema, grads, strict=True):
            average.mul_(alpha).add_(g, alpha=1 - alpha)
    for average, g in zip(ema, grads, strict=True):
        g.add_(average, alpha=lamb)
    return ema


def mean_loss(model, encoded, batch_size: int, pad_id: int, choice) -> float:
    """Mean cross entropy per completion token over `encoded` rows, without gradients."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            batch = pad_batch(encoded[i : i + batch_size], pad_id, choice.device)
            with autocast(choice):
                loss_sum, n = completion_loss(model, batch)
            total += loss_sum.item()
            count += n
    model.train(was_training)
    return total / count


def _fingerprint(base_dir: Path, rows: list[dict], settings: TrainingSettings) -> str:
    """What a run learns from: base, rows, and the settings that shape training."""
    digest = hashlib.sha256()
    digest.update(read_base_info(base_dir)["gguf_sha256"].encode())
    digest.update(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode())
    shaping = settings.model_dump(exclude=RESUMABLE_CHANGES | {"stages"})
    digest.update(json.dumps(shaping, sort_keys=True).encode())
    return digest.hexdigest()


def _python_rng(state) -> tuple:
    # random.setstate wants tuples; make sure a list never reaches it.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
