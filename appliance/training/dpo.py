"""LoRA DPO with TRL's DPOTrainer, from the base or continuing a stage's SFT adapter.

A DPO row is `{"prompt": [messages], "chosen": str, "rejected": str}`: two answers to the
same prompt, the better one first. The reference model is the base (a fresh adapter,
disabled) or the SFT adapter at `reference` (the policy starts from it; TRL keeps a frozen
copy as the reference). Checkpoints and resume are the HF Trainer's (the newest of
`keep_checkpoints` in run_dir/trainer); a non-finite loss stops the run with TrainingFailed.

The result carries the mean log-probability margin log p(chosen) − log p(rejected) over the
rows, measured by us (lora.completion_loss) before and after training.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from appliance.childproc import STOP, Stopped
from appliance.config import TrainingSettings
from appliance.errors import ForgeError, TrainingFailed
from appliance.training.batches import completion_ids, join, pad_batch, prompt_ids
from appliance.training.devices import DeviceChoice, choose_device, torch_threads
from appliance.training.lora import (
    autocast,
    completion_loss,
    load_base,
    lora_config,
    peak_memory_bytes,
    save_adapter,
)
from appliance.training.result import (
    StepRecord,
    TrainResult,
    append_metrics,
    begin_metrics,
    last_loss,
)
from appliance.training.sft import lr_factor

METRICS = "metrics.jsonl"
ADAPTER = "adapter"
TRAINER_DIR = "trainer"  # the HF Trainer's checkpoint-N directories


def check_dpo_rows(rows: list[dict]) -> None:
    if not rows:
        raise ForgeError("no DPO rows to train on")
    for i, row in enumerate(rows):
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, list) or not prompt:
            raise ForgeError(f"DPO row {i} has no 'prompt' message list")
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ForgeError(f"DPO row {i} has no '{key}' text")
        if row["chosen"] == row["rejected"]:
            raise ForgeError(f"DPO row {i} has the same chosen and rejected text")


def train_dpo(
    run_dir: Path,
    base_dir: Path,
    rows: list[dict],
    settings: TrainingSettings,
    *,
    reference: Literal["base"] | Path = "base",
    on_step: Callable[[StepRecord], None] | None = None,
) -> TrainResult:
    """Train a DPO LoRA adapter on `rows` into run_dir/adapter (resuming a killed run)."""
    run_dir, base_dir = Path(run_dir), Path(base_dir)
    check_dpo_rows(rows)
    if reference != "base" and not (Path(reference) / "adapter_config.json").is_file():
        raise ForgeError(
            f"the DPO reference {reference} is not a PEFT adapter directory",
            "pass reference='base' or the adapter_dir of the stage's SFT run",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    with torch_threads(settings.threads):
        return _train(run_dir, base_dir, rows, settings, reference, on_step)


def _train(run_dir, base_dir, rows, settings, reference, on_step) -> TrainResult:
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch
    from transformers import PrinterCallback

    choice = choose_device()
    model, tokenizer, peft_config = _policy(base_dir, settings, reference, choice)
    margin_before = mean_margin(model, tokenizer, rows, settings.max_seq_len, choice)
    trainer_dir = run_dir / TRAINER_DIR
    args = _dpo_config(trainer_dir, settings, choice)
    dataset = _dataset(rows)
    metrics = run_dir / METRICS
    torch.manual_seed(settings.seed)  # the fresh adapter's lora_A
    trainer = _trainer_class(settings)(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_watch(metrics, on_step)],
    )
    trainer.remove_callback(PrinterCallback)  # the watch reports the steps
    resume = last_complete_checkpoint(trainer_dir)
    resumed_from = int(Path(resume).name.rsplit("-", 1)[1]) if resume else None
    begin_metrics(metrics, resumed_from)  # steps after the checkpoint are redone
    output = trainer.train(resume_from_checkpoint=resume)
    if STOP.is_set():
        raise Stopped(f"DPO stopped at step {trainer.state.global_step}, checkpointed",
                      "run it again: it resumes from that step")  # fmt: skip

    policy = trainer.model
    margin_after = mean_margin(policy, tokenizer, rows, settings.max_seq_len, choice)
    adapter_dir = save_adapter(policy, run_dir / ADAPTER)
    tokens = max((log.get("num_tokens", 0) for log in trainer.state.log_history), default=0)
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=trainer.state.global_step,
        final_loss=last_loss(metrics),
        tokens_per_s=tokens / output.metrics["train_runtime"],
        peak_memory_bytes=peak_memory_bytes(choice),
        recoveries=0,
        resumed_from=resumed_from,
        device=choice.reason,
        margin_before=margin_before,
        margin_after=margin_after,
    )


def _trainer_class(settings: TrainingSettings):
    """TRL's DPOTrainer on the SFT loop's learning-rate schedule (sft.lr_factor). The HF
    schedule starts its warmup at a learning rate of 0, so a short run's first step (a
    4-step demo run's warmup step) changed nothing; here both trainers warm up alike."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    from torch.optim.lr_scheduler import LambdaLR
    from trl import DPOTrainer

    class Trainer(DPOTrainer):
        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:
                self.lr_scheduler = LambdaLR(
                    optimizer or self.optimizer,
                    lambda step: lr_factor(step, num_training_steps, settings),
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return Trainer


def last_complete_checkpoint(trainer_dir: Path) -> str | None:
    """The newest checkpoint-N the HF Trainer finished writing, or None. The Trainer
    writes a checkpoint in place, its trainer_state.json last: a run killed while writing
    one leaves a folder without it (or with it cut short), which is removed here, so the
    run resumes from the checkpoint before (HF's get_last_checkpoint would pick the broken
    one, and every resume would fail on it)."""
    found = []
    for path in trainer_dir.glob("checkpoint-*") if trainer_dir.is_dir() else []:
        step = path.name.rsplit("-", 1)[1]
        if path.is_dir() and step.isdigit():
            found.append((int(step), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):  # unfinished: the kill came while it was written
            shutil.rmtree(path)
            continue
        return str(path)
    return None


def _policy(base_dir: Path, settings: TrainingSettings, reference, choice: DeviceChoice):
    """The model to train, its tokenizer, and the LoRA config for TRL to add a fresh
    adapter (None when the policy starts from the SFT adapter at `reference`)."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    from peft import PeftModel

    model, tokenizer = load_base(base_dir, choice)
    model = model.to(choice.device)
    peft_config = lora_config(settings)
    if reference != "base":
        # The policy starts from the SFT adapter; TRL adds a frozen copy as the reference.
        model = PeftModel.from_pretrained(model, str(reference), is_trainable=True)
        peft_config = None
    return model, tokenizer, peft_config


def _dpo_config(trainer_dir: Path, settings: TrainingSettings, choice: DeviceChoice):
    # torch: loaded only by the process that trains or embeds, not by every importer
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(trainer_dir),
        use_cpu=choice.device == "cpu",
        bf16=choice.dtype == "bf16",
        fp16=choice.dtype == "fp16",
        learning_rate=settings.lr,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        activation_checkpointing=False,  # as the SFT loop: speed over activation memory
        max_length=settings.max_seq_len,
        beta=settings.dpo_beta,
        save_strategy="steps",
        save_steps=settings.checkpoint_every,
        save_total_limit=settings.keep_checkpoints,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        seed=settings.seed,
        data_seed=settings.seed,
    )


def _dataset(rows: list[dict]):
    """The rows as TRL's conversational preference dataset."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": row["prompt"],
                "chosen": [{"role": "assistant", "content": row["chosen"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]}],
            }
            for row in rows
        ]
    )


def _watch(metrics: Path, on_step: Callable[[StepRecord], None] | None):
    """A TrainerCallback that logs each step to `metrics` and `on_step`, stops on a
    non-finite loss, and saves then stops on SIGTERM."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    from transformers import TrainerCallback

    last = {"time": time.perf_counter(), "tokens": 0}

    class Watch(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            if not logs or "loss" not in logs:
                return
            now = time.perf_counter()
            record = StepRecord(
                step=state.global_step,
                total_steps=state.max_steps,
                loss=float(logs["loss"]),
                lr=float(logs.get("learning_rate", 0.0)),
                grad_norm=_finite_or_none(logs.get("grad_norm")),
                tokens=int(logs.get("num_tokens", 0)) - last["tokens"],  # TRL counts up
                seconds=now - last["time"],
            )
            last.update(time=now, tokens=int(logs.get("num_tokens", 0)))
            append_metrics(
                metrics, {**asdict(record), "reward_margin": logs.get("rewards/margins")}
            )
            if not math.isfinite(record.loss):
                raise TrainingFailed(
                    f"DPO diverged at step {record.step}: loss {record.loss}",
                    f"lower training.lr or check the rows; the curve is in {metrics}",
                )
            if on_step is not None:
                on_step(record)

        def on_step_end(self, _args, _state, control, **_):
            if STOP.is_set():  # SIGTERM: save this step, then stop (the run resumes from it)
                control.should_save = True
                control.should_training_stop = True

    return Watch()


def mean_margin(model, tokenizer, rows: list[dict], max_seq_len: int, choice) -> float:
    """Mean over rows of log p(chosen | prompt) − log p(rejected | prompt), in nats."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    was_training = model.training
    model.eval()
    margins = []
    with torch.no_grad():
        for row in rows:
            prompt = prompt_ids(tokenizer, row["prompt"])
            logps = []
            for key in ("chosen", "rejected"):
                encoded = join(prompt, completion_ids(tokenizer, row[key]), max_seq_len)
                batch = pad_batch([encoded], tokenizer.pad_token_id or 0, choice.device)
                with autocast(choice):
                    loss_sum, _ = completion_loss(model, batch)
                logps.append(-loss_sum.item())
            margins.append(logps[0] - logps[1])
    model.train(was_training)
    return sum(margins) / len(margins)


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
