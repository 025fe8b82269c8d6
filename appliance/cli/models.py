"""`forge models list|bench`: the base models in models.toml, where they run, how fast."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich import box
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from appliance.cli.output import console, emit_json, err_console, human_bytes
from appliance.config import load_config
from appliance.digest import sha256_file
from appliance.models.manifest import (
    GGUF_MAGIC,
    ModelFileError,
    check_model_file,
    gguf_architecture,
    read_manifest,
)
from appliance.registry import import_base
from appliance.serving.placement import CPU, detect_gpus, plan

NO_DAEMON_POOL = "none in this process; a running daemon's pool is not visible from the CLI yet"


@click.group()
def models() -> None:
    """The base models Forge serves (models.toml): list them, measure their speed."""


def _manifest():
    return read_manifest(load_config().models_manifest)


def _base_row(base, placement) -> dict:
    """What `forge models list` shows of one base; a problem with its file is reported."""
    path = base.path
    exists = path.is_file()
    is_gguf = False
    problem = None
    if path.exists() and not exists:
        problem = f"{path} is not a file"
    elif exists:
        try:
            with path.open("rb") as fh:
                is_gguf = fh.read(4) == GGUF_MAGIC
        except OSError as exc:
            problem = f"cannot read {path}: {exc.strerror}"
    if problem is None:
        problem = check_model_file(base)  # hashes the file once
    sha256_ok = None  # unknown: no file, or not a GGUF
    architecture = None
    if is_gguf:
        # A second hash only when something is wrong, to tell which thing it is.
        sha256_ok = problem is None or sha256_file(path) == base.sha256
        try:
            architecture = gguf_architecture(path) or None
        except ModelFileError:
            architecture = None
    return {
        "name": base.name,
        "path": str(path),
        "exists": exists,
        "size_bytes": path.stat().st_size if exists else None,
        "sha256": base.sha256,
        "sha256_ok": sha256_ok,
        "architecture": architecture,
        "context": base.context,
        "threads": base.n_threads,
        "device": placement.device,
        "gpu_layers": placement.gpu_layers,
        "problem": problem,
    }


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_models(as_json: bool) -> None:
    """The base models, their files and placement, the roles they serve, the GPUs seen.

    Each base's file is checked (present, a GGUF, its sha256, a supported architecture);
    problems are listed, and the exit status is 1 when any base has one.
    """
    manifest = _manifest()
    gpus = detect_gpus()
    placements = plan(manifest.bases, gpus)
    bases = [_base_row(base, placements.get(base.name, CPU)) for base in manifest.bases]
    data = {
        "manifest": str(manifest.path),
        "bases": bases,
        "roles": dict(manifest.roles),
        "gpus": [
            {
                "index": gpu.index,
                "name": gpu.name,
                "free_bytes": gpu.free_bytes,
                "total_bytes": gpu.total_bytes,
                "compute_capability": list(gpu.compute_capability)
                if gpu.compute_capability
                else None,
            }
            for gpu in gpus
        ],
        # Adapters live in the pool of the process that serves requests (the daemon).
        "loaded_adapters": [],
    }
    if as_json:
        emit_json(data)
    else:
        _print_list(data)
    if any(row["problem"] for row in bases):
        raise SystemExit(1)


def _print_list(data: dict) -> None:
    console.print(f"Base models ({escape(data['manifest'])}):")
    for row in data["bases"]:
        mark = "[red]problem[/]" if row["problem"] else "[green]ok[/]"
        console.print(f"  {escape(row['name'])}  {mark}")
        size = human_bytes(row["size_bytes"]) if row["exists"] else "missing"
        sha = {True: "sha256 ok", False: "[red]sha256 wrong[/]", None: "sha256 not checked"}
        console.print(f"    file   {escape(row['path'])} ({size}), {sha[row['sha256_ok']]}")
        device = row["device"]
        if row["gpu_layers"]:
            layers = "all" if row["gpu_layers"] == -1 else row["gpu_layers"]
            device += f" ({layers} layers offloaded)"
        console.print(
            f"    model  {escape(row['architecture'] or 'unknown architecture')}, "
            f"context {row['context']}, {row['threads']} threads, on {device}"
        )
        if row["problem"]:
            console.print(f"    [red]{escape(row['problem'])}[/]")
    console.print("Roles:")
    for role, base in sorted(data["roles"].items()):
        console.print(f"  {escape(role)} → {escape(base)}")
    if data["gpus"]:
        console.print("GPUs:")
        for gpu in data["gpus"]:
            cc = gpu["compute_capability"]
            console.print(
                f"  cuda:{gpu['index']} {escape(gpu['name'])}, "
                f"{human_bytes(gpu['free_bytes'])} free of {human_bytes(gpu['total_bytes'])}"
                + (f", compute capability {cc[0]}.{cc[1]}" if cc else "")
            )
    else:
        console.print("GPUs: none detected (bases run on the CPU)")
    console.print(f"Loaded adapters: {NO_DAEMON_POOL}")


@models.command()
@click.option(
    "--tokens",
    type=click.IntRange(min=1, max=4096),
    default=64,
    show_default=True,
    help="Tokens generated per run.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1, max=100),
    default=5,
    show_default=True,
    help="Timed runs of each kind (medians are reported).",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def bench(tokens: int, repeat: int, as_json: bool) -> None:
    """Generation speed of each base: llama.cpp direct, through the pool, and through the
    pool with a synthetic LoRA adapter (made in a temporary folder).

    Loads each base twice (the pool and a raw llama.cpp twin), one base at a time.
    Greedy decoding of the same prompt; runs take turns; medians of --repeat runs.
    Nothing is written to the call log.
    """
    from appliance.serving.bench import measure_manifest  # gguf: kept off forge --help

    manifest = _manifest()
    quiet = as_json or not err_console.is_terminal
    with tempfile.TemporaryDirectory(prefix="forge-models-bench-") as workdir:
        if quiet:
            results = measure_manifest(manifest, Path(workdir), tokens=tokens, repeat=repeat)
        else:
            with Status("measuring…", console=err_console) as status:
                results = measure_manifest(
                    manifest,
                    Path(workdir),
                    tokens=tokens,
                    repeat=repeat,
                    on_progress=lambda message: status.update(escape(message)),
                )
    if as_json:
        emit_json({"tokens": tokens, "repeat": repeat, "bases": [r.to_dict() for r in results]})
        return
    table = Table(
        title=f"Generation, {tokens} tokens, median of {repeat} (tokens/s)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("base", no_wrap=True)
    table.add_column("device")
    for column in ("raw", "pool", "pool\n÷ raw", "pool with\nadapter", "adapter\n÷ raw"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            escape(r.name),
            r.device,
            f"{r.raw.tokens_per_s:.1f}",
            f"{r.pool.tokens_per_s:.1f}",
            f"{r.ratio:.2f}×",
            f"{r.pool_adapter.tokens_per_s:.1f}",
            f"{r.adapter_ratio:.2f}×",
        )
    console.print(table)
    for r in results:
        if not r.same_output:
            console.print(
                f"[yellow]note[/] {escape(r.name)}: the pool's greedy text differs from "
                "llama.cpp's own for the same prompt"
            )


@models.command(name="import")
@click.argument("gguf", type=click.Path(path_type=Path))
@click.option("--role", required=True, help="The role this base serves (e.g. coder, reasoning).")
@click.option("--name", help="Name in models.toml (default: from the file name).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def import_(gguf: Path, role: str, name, as_json: bool) -> None:
    """Import a GGUF base model: check it, copy it into models/, write its training base
    (the dequantized checkpoint adapters are trained on) beside it, and record it in
    models.toml for ROLE. A failure changes nothing."""
    config = load_config()
    with Status("importing: checking, copying, dequantizing…", console=err_console):
        imported = import_base(config, gguf, role, name)
    if as_json:
        emit_json(imported.to_dict())
        return
    console.print(
        f"imported {escape(imported.name)} ({imported.sha256[:12]}) for role {escape(role)}; "
        f"training base at {escape(str(imported.training_base))}"
    )
