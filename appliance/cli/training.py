"""`forge train STAGE` and `forge adapters [STAGE]`: train candidates, list versions."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.status import Status

from appliance.cli.common import open_forge
from appliance.cli.output import console, emit_json, err_console
from appliance.errors import UsageError
from appliance.registry import versions
from appliance.training.job import train_stage


@click.command()
@click.argument("stage")
@click.option("--dpo", is_flag=True, help="Train on the stage's DPO dataset (default: SFT).")
@click.option(
    "--on",
    "on",
    metavar="VERSION",
    help="With --dpo: continue SFT version vN (or STAGE-vN), which is also the DPO "
    "reference (default: a fresh adapter on the base).",
)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after N optimizer steps.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def train(stage: str, dpo: bool, on, max_steps, as_json: bool) -> None:
    """Train a LoRA adapter for STAGE on its latest dataset version and register it as a
    candidate STAGE-vN. A killed run resumes from its checkpoints when started again."""
    config, db = open_forge()
    on = _version_number(stage, on) if on is not None else None
    with (
        Status(f"training {stage} (log under FORGE_HOME/runs/train/)…", console=err_console)
        if not as_json
        else _Null()
    ):
        adapter = train_stage(config, db, stage, dpo=dpo, on=on, max_steps=max_steps)
    if as_json:
        emit_json(adapter.to_dict())
        return
    m = adapter.metrics
    on_text = f" on {m['built_on']}" if m.get("built_on") not in (None, "base") else ""
    console.print(
        f"[green]{adapter.name}[/] ({adapter.kind} candidate{on_text}) from "
        f"{escape(adapter.dataset)}: "
        f"{m['steps']} steps, final loss {m['final_loss']:.4f}, "
        f"{m['tokens_per_s']:.0f} tokens/s → {escape(adapter.path)}"
    )


def _version_number(stage: str, text: str) -> int:
    """vN, N or STAGE-vN → N."""
    bare = text.removeprefix(f"{stage}-").removeprefix("v")
    if not bare.isdigit():
        raise UsageError(
            f"--on {text!r} is not a version of {stage}",
            f"give vN or {stage}-vN (forge adapters {stage} lists them)",
        )
    return int(bare)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


@click.command()
@click.argument("stage", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def adapters(stage, as_json: bool) -> None:
    """Adapter versions (STAGE-v1, STAGE-v2, …): status (candidate, active, inactive,
    rejected), whether they can be served on the current base, dataset and final loss."""
    _, db = open_forge()
    found = versions(db, stage)
    if as_json:
        emit_json([a.to_dict() for a in found])
        return
    if not found:
        console.print("no adapters yet: forge train STAGE makes candidates")
    for entry in found:
        a = entry.adapter
        status = f"[green]{a.status:10}[/]" if a.status == "active" else f"{a.status:10}"
        served = (
            "servable"
            if entry.servable
            else f"[red]not servable[/] ({escape(entry.unservable_reason or '')})"
        )
        console.print(
            f"{a.name:18} {status} {a.kind}  {escape(a.dataset)}  "
            f"loss {a.metrics.get('final_loss', float('nan')):.4f}  {served}  {escape(a.path)}"
        )
