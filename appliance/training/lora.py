"""The model side of training: the training base with a LoRA adapter on it, the
completion-only loss, mixed precision on CUDA, and the peak-memory reading.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import tempfile
from pathlib import Path

from appliance.config import TrainingSettings
from appliance.errors import ForgeError
from appliance.training.devices import DeviceChoice

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def lora_config(settings: TrainingSettings):
    # torch: loaded only by the process that trains or embeds, not by every importer
    from peft import LoraConfig

    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_base(base_dir: Path, choice: DeviceChoice):
    """The training base and its tokenizer, in the chosen float type (not yet on the device)."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(base_dir) / "config.json").is_file():
        raise ForgeError(
            f"{base_dir} is not a training base (no config.json)",
            "make it with appliance.models.hf_base.make_training_base",
        )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=getattr(torch, DTYPES[choice.dtype])
    )
    return model, tokenizer


def lora_model(base_dir: Path, settings: TrainingSettings, choice: DeviceChoice):
    """(PEFT model with a fresh adapter on the device, tokenizer); lora_A seeded by settings."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch
    from peft import get_peft_model

    # choice.unsloth is reported but not acted on yet: every device trains with plain PEFT.
    base, tokenizer = load_base(base_dir, choice)
    torch.manual_seed(settings.seed)
    # PEFT keeps the adapter in fp32 on an fp16/bf16 base (autocast_adapter_dtype).
    model = get_peft_model(base, lora_config(settings))
    return model.to(choice.device), tokenizer


def autocast(choice: DeviceChoice):
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    if choice.dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(choice.device, dtype=getattr(torch, DTYPES[choice.dtype]))


def completion_loss(model, batch: dict):
    """(sum of the completion tokens' cross entropy, number of them) for a pad_batch batch."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch.nn.functional as F

    keep = batch["keep"]
    # Only the last `keep` positions predict completion tokens (rows are left-padded): the
    # lm_head runs on those alone, not on the whole prompt.
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=keep,
        use_cache=False,
    ).logits[:, :-1]
    targets = batch["labels"][:, -keep + 1 :]
    loss = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    return loss, int((targets != -100).sum())


def peak_memory_bytes(choice: DeviceChoice) -> int:
    if choice.device == "cuda":
        # torch: loaded only by the process that trains or embeds, not by every importer
        import torch

        return int(torch.cuda.max_memory_allocated())
    # ru_maxrss is in KiB on Linux: the peak resident set of this process so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def save_adapter(model, dest: Path) -> Path:
    """The model's trained ("default") adapter, saved by PEFT into a temp dir beside `dest`
    and swapped in, so `dest` is always a whole adapter."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        model.save_pretrained(staging, selected_adapters=["default"])
        staging.chmod(0o755)  # mkdtemp makes it owner-only; the serving side reads it too
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return dest
