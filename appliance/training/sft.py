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
from dataclasses import asdict
from pathlib import Path

from appliance.config import TrainingSettings
from appliance.errors import ForgeError, TrainingFailed
from appliance.models.hf_base import read_base_info
from appliance.procs import STOP, Stopped
from appliance.training.batches import (
    check_sft_rows,
    encode_sft_row,
    pad_batch,
    planned_steps,
    rows_for_step,
)
from appliance.training.checkpoints import latest_checkpoint, load_state, save_checkpoint
from appliance.training.devices import choose_device, torch_threads
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
    fault: Callable[[int], str | None] | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `rows` ({"messages", "completion"}) into `run_dir`.

    Continues from run_dir's newest checkpoint when there is one. `on_step` sees each
    StepRecord after it is logged and checkpointed. `fault(step)` is a test hook: returning
    "nan" makes that (1-based) step's loss NaN.
    """
    run_dir, base_dir = Path(run_dir), Path(base_dir)
    check_sft_rows(rows)
    run_dir.mkdir(parents=True, exist_ok=True)
    if heldout:
        check_sft_rows(heldout, "heldout rows")
    with torch_threads(settings.threads):
        return _train(run_dir, base_dir, rows, settings, heldout, on_step, fault)


def _train(run_dir, base_dir, rows, settings, heldout, on_step, fault) -> TrainResult:
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    fingerprint = _fingerprint(base_dir, rows, settings)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and checkpoint.info.get("fingerprint") != fingerprint:
        raise ForgeError(
            f"{run_dir} holds a run with other rows, base or settings "
            f"(checkpoint {checkpoint.path.name})",
            "use a new run directory, or remove its checkpoints to start over",
        )
    choice = choose_device()
    model, tokenizer = lora_model(base_dir, settings, choice)
    encoded = [encode_sft_row(tokenizer, row, settings.max_seq_len) for row in rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_steps = planned_steps(
        len(rows), settings.epochs, settings.max_steps, settings.batch_size * settings.grad_accum
    )
    params = [p for p in model.parameters() if p.requires_grad]
    initial_adapter = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
    scaler = torch.amp.GradScaler("cuda") if choice.dtype == "fp16" else None

    def new_optimizer():
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)

    def restore(checkpoint):
        """Load a checkpoint (None: the initial state); returns (step, optimizer, ema, info)."""
        optimizer = new_optimizer()
        if checkpoint is None:
            set_peft_model_state_dict(model, initial_adapter)
            return 0, optimizer, None, {}
        state = load_state(checkpoint, choice.device)
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if choice.device == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
        random.setstate(_python_rng(state["rng"]["python"]))
        return checkpoint.step, optimizer, state.get("grokfast_ema"), checkpoint.info

    # Resume from the newest checkpoint, if the run has one.
    step, optimizer, ema, info = restore(checkpoint)
    resumed_from = checkpoint.step if checkpoint else None
    lr_scale = info.get("lr_scale", 1.0)
    recoveries = info.get("recoveries", 0)
    metrics = run_dir / METRICS
    truncate_metrics(metrics, step)
    if resumed_from is not None:
        append_metrics(metrics, {"event": "resumed", "step": step})

    model.train()
    started = time.perf_counter()
    tokens_trained = 0
    record = None
    while step < total_steps:
        step_started = time.perf_counter()
        lr = settings.lr * lr_scale * lr_factor(step, total_steps, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # One optimizer step: grad_accum forward/backward passes, the loss normalised over
        # all completion tokens of the step (so accumulation equals one big batch).
        batches = [
            pad_batch([encoded[i] for i in indices], pad_id, choice.device)
            for indices in rows_for_step(
                step, len(rows), settings.batch_size, settings.grad_accum, settings.seed
            )
        ]
        step_targets = sum(int((b["labels"] != -100).sum()) for b in batches)
        inject_nan = fault is not None and fault(step + 1) == "nan"
        loss_value = 0.0
        tokens = 0
        for batch in batches:
            with autocast(choice):
                loss_sum, _ = completion_loss(model, batch)
            loss = loss_sum / step_targets
            if inject_nan:
                loss = loss * float("nan")
            (scaler.scale(loss) if scaler else loss).backward()
            loss_value += loss.item()
            tokens += batch["tokens"]
        if scaler is not None:
            scaler.unscale_(optimizer)
        if settings.grokfast:
            ema = grokfast_filter(params, ema, settings.grokfast_alpha, settings.grokfast_lambda)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm))

        # Watchdog. With fp16 loss scaling an infinite gradient is an overflow the scaler
        # handles by skipping the step; a non-finite loss is always divergence.
        diverged = not math.isfinite(loss_value) or (
            scaler is None and not math.isfinite(grad_norm)
        )
        if diverged:
            optimizer.zero_grad(set_to_none=True)
            recoveries += 1
            if recoveries > settings.max_recoveries:
                raise TrainingFailed(
                    f"training diverged at step {step + 1} of {total_steps} (loss {loss_value}, "
                    f"gradient norm {grad_norm}) after {settings.max_recoveries} recoveries, "
                    f"the learning rate already down to {lr_scale:g} × {settings.lr:g}",
                    f"lower training.lr, check the rows for garbage, or see {metrics}",
                )
            failed_step = step + 1
            checkpoint = latest_checkpoint(run_dir)
            step, optimizer, ema, _ = restore(checkpoint)
            lr_scale /= 10
            truncate_metrics(metrics, step)
            append_metrics(
                metrics,
                {
                    "event": "recovered",
                    "step": step,
                    "failed_step": failed_step,
                    "loss": loss_value if math.isfinite(loss_value) else str(loss_value),
                    "lr_scale": lr_scale,
                    "recoveries": recoveries,
                },
            )
            continue

        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_trained += tokens
        record = StepRecord(
            step=step,
            total_steps=total_steps,
            loss=loss_value,
            lr=lr,
            grad_norm=grad_norm if math.isfinite(grad_norm) else None,
            tokens=tokens,
            seconds=time.perf_counter() - step_started,
        )
        append_metrics(metrics, asdict(record))

        stopping = STOP.is_set()  # SIGTERM: checkpoint this step, then stop
        if step % settings.checkpoint_every == 0 or step == total_steps or stopping:
            state = {
                "adapter": get_peft_model_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "grokfast_ema": ema,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if choice.device == "cuda" else None,
                    "python": random.getstate(),
                },
            }
            info = {
                "rows_seen": step * settings.batch_size * settings.grad_accum,
                "total_steps": total_steps,
                "lr_scale": lr_scale,
                "recoveries": recoveries,
                "fingerprint": fingerprint,
            }
            save_checkpoint(run_dir, step, info, state, settings.keep_checkpoints)
        if on_step is not None:
            on_step(record)
        if stopping and step < total_steps:
            raise Stopped(f"training stopped at step {step} of {total_steps}, checkpointed",
                          "run it again: it resumes from that step")  # fmt: skip
    train_seconds = time.perf_counter() - started

    adapter_dir = save_adapter(model, run_dir / ADAPTER)
    heldout_loss = heldout_base = None
    if heldout:
        held = [encode_sft_row(tokenizer, row, settings.max_seq_len) for row in heldout]
        heldout_loss = mean_loss(model, held, settings.batch_size, pad_id, choice)
        with model.disable_adapter():
            heldout_base = mean_loss(model, held, settings.batch_size, pad_id, choice)
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=step,
        final_loss=record.loss if record else last_loss(metrics),
        tokens_per_s=tokens_trained / train_seconds,
        peak_memory_bytes=peak_memory_bytes(choice),
        recoveries=recoveries,
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
