"""`forge train STAGE`: one training job, top to bottom.

The stage's latest dataset version (refused when it failed its gates) with its replay
mix → a LoRA run from the frozen base's training checkpoint, in a child process, in a
run folder named for the job so a killed run resumes from its checkpoints → the GGUF
export → the adapter registered as a *candidate* `{stage}-v{N}`. Nothing is promoted.

DPO `on` an SFT version (`forge train STAGE --dpo --on vN`; the cycle does it after each
SFT candidate) continues that version's LoRA adapter, and that adapter is also the frozen
reference (dpo.py: TRL keeps a copy of it as the "ref" adapter). Continuing the adapter
rather than merging it into the base and adding a new LoRA keeps one adapter file per
version, exported to GGUF like any other, on the base the pool already serves; TRL and
PEFT support it directly (PeftModel with a trainable adapter, no peft_config). The run
folder names the SFT version, so a killed run resumes only on top of the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from appliance import registry
from appliance.config import Config
from appliance.datasets.rows import DatasetRow
from appliance.datasets.versions import latest, training_mix
from appliance.digest import sha256_file
from appliance.diskspace import job_need_bytes, require_room
from appliance.errors import UsageError
from appliance.models.hf_base import make_training_base
from appliance.models.importing import training_base_dir
from appliance.models.manifest import read_manifest
from appliance.registry import AdapterVersion
from appliance.stages import STAGE_ROLES, STAGES
from appliance.store import transaction
from appliance.training.export_gguf import export_adapter
from appliance.training.runner import run_in_child
from appliance.training.sft import ADAPTER


def _trainer_rows(rows: list[DatasetRow], kind: str) -> list[dict]:
    """The trainer child's input (training/batches.py and dpo.py say its shape)."""
    if kind == "sft":
        return [{"messages": r.messages, "completion": r.completion} for r in rows]
    return [{"prompt": r.messages, "chosen": r.chosen, "rejected": r.rejected} for r in rows]


def train_stage(
    config: Config,
    db,
    stage: str,
    *,
    dpo: bool = False,
    on: int | None = None,
    max_steps: int | None = None,
    on_line: Callable[[str], None] | None = None,
) -> AdapterVersion:
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}", f"stages: {', '.join(STAGES)}")
    kind = "dpo" if dpo else "sft"
    if on is not None and not dpo:
        raise UsageError("only DPO is trained on top of an SFT version", "add --dpo")
    built_on = _sft_version(config, db, stage, on) if on is not None else None
    dataset = latest(db, stage, kind)
    if dataset is None:
        raise UsageError(
            f"no {kind} dataset for {stage} yet",
            "run a campaign, then forge datasets build",
        )
    # Checkpoints, the adapter and its export need room: never start a run the disk ends.
    require_room(config, f"training {stage}", job_need_bytes(config, "train"))
    rows = _trainer_rows(
        training_mix(db, stage, kind, dataset, config.settings.datasets.replay), kind
    )
    base = read_manifest(config.models_manifest).for_role(STAGE_ROLES[stage])
    base_dir = make_training_base(base.path.resolve(), training_base_dir(base.path))
    settings = config.settings.training.for_stage(stage)
    if max_steps is not None:
        settings = settings.model_copy(update={"max_steps": max_steps})
    if built_on is not None and built_on.base_sha256 != base.sha256:
        raise UsageError(
            f"{built_on.name} was trained on another base than {stage}'s current one",
            f"train {stage} again (forge train {stage}), then DPO on that version",
        )
    on_name = f"-on-{built_on.name}" if built_on else ""
    run_dir = config.dir("runs") / "train" / f"{dataset.name}{on_name}-{base.sha256[:12]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    function = "appliance.training.dpo:train_dpo" if dpo else "appliance.training.sft:train_sft"
    kwargs = {"run_dir": run_dir, "base_dir": base_dir, "rows": rows, "settings": settings}
    if built_on is not None:
        kwargs["reference"] = sft_adapter_dir(config, built_on)
    result = run_in_child(function, kwargs, run_dir / "train.log")
    with transaction(db) as conn:  # the version number is taken under the write lock
        number = registry.next_version(conn, stage)
        out = config.dir("adapters") / stage / f"{stage}-v{number}.gguf"
        out.parent.mkdir(parents=True, exist_ok=True)
        export_adapter(result.adapter_dir, base_dir, out)
        metrics = {
            "steps": result.steps,
            "final_loss": result.final_loss,
            "tokens_per_s": result.tokens_per_s,
            "peak_memory_bytes": result.peak_memory_bytes,
            "recoveries": result.recoveries,
            "resumed_from": result.resumed_from,
            "device": result.device,
            "margin_before": result.margin_before,
            "margin_after": result.margin_after,
            "rows": len(rows),
            "run_dir": str(run_dir.relative_to(config.home)),
        }
        if dpo:  # the policy started from, and was held to, this version (or the base)
            metrics["built_on"] = built_on.name if built_on else "base"
            metrics["reference"] = metrics["built_on"]
            metrics["built_on_dataset"] = built_on.dataset if built_on else None
        registry.register_candidate(
            conn, stage=stage, version=number, kind=kind, dataset=dataset.name,
            base=base.name, base_sha256=base.sha256, hyperparameters=settings.model_dump_json(),
            metrics=metrics, path=str(out.relative_to(config.home)), sha256=sha256_file(out),
        )  # fmt: skip
    return registry.get(db, stage, number)


def sft_adapter_dir(config: Config, version: AdapterVersion) -> Path:
    """The PEFT adapter directory an SFT version was exported from (its run folder's)."""
    return config.home / version.metrics["run_dir"] / ADAPTER


def _sft_version(config: Config, db, stage: str, number: int) -> AdapterVersion:
    version = registry.get(db, stage, number)
    if version.kind != "sft":
        raise UsageError(
            f"{version.name} is a {version.kind} version: DPO is built on an SFT version",
            f"forge adapters {stage} lists the versions and their kinds",
        )
    run_dir = version.metrics.get("run_dir")
    if not run_dir or not (sft_adapter_dir(config, version) / "adapter_config.json").is_file():
        raise UsageError(
            f"the LoRA adapter {version.name} was exported from is gone "
            f"(FORGE_HOME/{run_dir or 'runs/train/…'}/{ADAPTER})",
            f"train {stage} again, then DPO on the new version",
        )
    return version
