"""Measuring the model pool: generation speed through the pool against llama.cpp used
directly, with and without an adapter, and a synthetic LoRA adapter to measure with.

Used by `forge models bench` and bench/serving_bench.py; nothing here is on a request path.
Every measured run evaluates its prompt from an empty cache, raw and pool alike, so the
two sides do the same work and only the pool's own overhead differs.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from appliance.models.gguf_adapter import write_adapter_gguf
from appliance.models.manifest import (
    BaseModelFile,
    ModelFileError,
    ModelsManifest,
    gguf_architecture,
    verify_base,
)
from appliance.records import as_json
from appliance.serving.placement import CPU, Placement
from appliance.serving.pool import Adapter, ModelPool, load_llama

# The weights a stage adapter adapts: every block's attention and MLP projections.
ADAPTED = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
ADAPTED_TENSOR = re.compile(rf"^blk\.\d+\.({'|'.join(ADAPTED)})\.weight$")
# Greedy decoding keeps counting for hundreds of tokens: runs do not end early.
BENCH_PROMPT = "Count from 1 to 500, separated by commas: 1, 2, 3, 4, 5, 6,"
# lora_b's spread: enough to move the logits visibly, little enough to keep the text sane.
LORA_B_STD = 0.01


def synthetic_adapter(base_gguf: Path, out: Path, rank: int = 8, seed: int = 0) -> Path:
    """Write a random GGUF LoRA adapter for `base_gguf` at `out` (for benchmarks and tests).

    It adapts every block's attention and MLP projections with rank `rank` and alpha
    2·rank, like a trained stage adapter in size and cost; its values are small random
    numbers, so it changes the model's outputs a little.
    """
    base_gguf, out = Path(base_gguf), Path(out)
    if rank < 1:
        raise ValueError(f"rank must be 1 or more, not {rank}")
    arch = gguf_architecture(base_gguf)
    if not arch:
        raise ModelFileError(f"{base_gguf} has no general.architecture")
    try:
        reader = gguf.GGUFReader(base_gguf)
    except ValueError as exc:  # what GGUFReader raises for a non-GGUF or truncated file
        raise ModelFileError(f"{base_gguf} is not a readable GGUF file: {exc}") from exc
    # GGUFReader gives shapes in ggml order, innermost first: a weight (out, in) reads as
    # (in, out). GGUFWriter takes NumPy arrays in PyTorch order and reverses them itself.
    targets = [
        (t.name, int(t.shape[0]), int(t.shape[1]))
        for t in reader.tensors
        if ADAPTED_TENSOR.match(t.name) and len(t.shape) == 2
    ]
    if not targets:
        raise ModelFileError(
            f"{base_gguf} has no blk.N.attn_q/…/ffn_down weights to adapt",
            "synthetic adapters are made for llama-style transformer bases",
        )
    rng = np.random.default_rng(seed)

    def pairs():
        for name, n_in, n_out in targets:
            # lora_a like PEFT's initialisation scale, lora_b small (a trained B, not zeros).
            lora_a = rng.normal(0.0, 1.0 / np.sqrt(n_in), (rank, n_in)).astype(np.float32)
            lora_b = rng.normal(0.0, LORA_B_STD, (n_out, rank)).astype(np.float32)
            yield name, lora_a, lora_b

    write_adapter_gguf(out, arch, 2 * rank, pairs())
    return out


# ------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Run:
    """One timed generation."""

    seconds: float
    tokens: int  # generated
    text: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Throughput:
    """Medians over runs of the same generation."""

    tokens_per_s: float
    seconds: float
    tokens: int
    runs: int

    @classmethod
    def of(cls, runs: list[Run]) -> Throughput:
        return cls(
            tokens_per_s=statistics.median(r.tokens_per_s for r in runs),
            seconds=statistics.median(r.seconds for r in runs),
            tokens=int(statistics.median(r.tokens for r in runs)),
            runs=len(runs),
        )

    def to_dict(self) -> dict:
        return as_json(self)


@dataclass(frozen=True)
class GenerationBench:
    """Generation speed of one base: llama.cpp direct, through the pool, with an adapter."""

    name: str
    device: str
    prompt_tokens: int
    raw: Throughput
    pool: Throughput
    pool_adapter: Throughput
    same_output: bool  # the pool's greedy text equals llama.cpp's own

    @property
    def ratio(self) -> float:
        return self.pool.tokens_per_s / self.raw.tokens_per_s

    @property
    def adapter_ratio(self) -> float:
        return self.pool_adapter.tokens_per_s / self.raw.tokens_per_s

    def to_dict(self) -> dict:
        speeds = ("raw", "pool", "pool_adapter", "ratio", "adapter_ratio")
        return as_json(self, "name", "device", "prompt_tokens", *speeds, "same_output")


def bench_role(name: str) -> str:
    return f"bench:{name}"


def bench_manifest(manifest: ModelsManifest) -> ModelsManifest:
    """`manifest` with a role per base (`bench:NAME`), so the pool can reach every base,
    including those no configured role names."""
    roles = dict(manifest.roles) | {bench_role(b.name): b.name for b in manifest.bases}
    return dataclasses.replace(manifest, roles=roles)


def raw_llama(spec: BaseModelFile, placement: Placement = CPU, lora_path: Path | None = None):
    """llama.cpp's own `Llama` for `spec`, with the settings the pool gives its context."""
    return load_llama(spec, placement, lora_path)


def run_raw(llm, prompt: str, tokens: int) -> Run:
    """A greedy completion straight through llama-cpp-python, prompt evaluated afresh."""
    llm.reset()
    started = time.perf_counter()
    result = llm.create_completion(
        prompt, max_tokens=tokens, temperature=0, top_k=1, min_p=0.0, repeat_penalty=1.0
    )
    seconds = time.perf_counter() - started
    return Run(seconds, result["usage"]["completion_tokens"], result["choices"][0]["text"])


def run_pool(
    pool: ModelPool, role: str, prompt: str, tokens: int, adapter: Adapter | None = None
) -> Run:
    """A greedy completion through the pool, prompt evaluated afresh."""
    base = pool.base_for(role)
    with base.lock:
        base.llm.reset()  # no prompt prefix reused from the previous run, as in run_raw
    started = time.perf_counter()
    result = pool.complete(role, prompt, adapter=adapter, max_tokens=tokens, temperature=0)
    seconds = time.perf_counter() - started
    return Run(seconds, result.completion_tokens, result.text)


def measure_generation(
    pool: ModelPool,
    name: str,
    llm,
    adapter: Adapter,
    *,
    tokens: int = 64,
    repeat: int = 5,
    prompt: str = BENCH_PROMPT,
) -> GenerationBench:
    """Tokens/s of base `name` through `pool` (bare and with `adapter`) and through `llm`,
    a raw `Llama` of the same file: one untimed warm-up each (it loads the adapter), then
    `repeat` rounds taking turns, medians. `pool` must serve the role `bench:NAME`."""
    role = bench_role(name)
    sides: dict[str, Callable[[], Run]] = {
        "raw": lambda: run_raw(llm, prompt, tokens),
        "pool": lambda: run_pool(pool, role, prompt, tokens),
        "pool_adapter": lambda: run_pool(pool, role, prompt, tokens, adapter),
    }
    first = {side: run() for side, run in sides.items()}
    runs: dict[str, list[Run]] = {side: [] for side in sides}
    order = list(sides)
    for round_ in range(repeat):
        # Rotate who goes first, so no side always follows the same other one.
        for side in order[round_ % 3 :] + order[: round_ % 3]:
            runs[side].append(sides[side]())
    base = pool.base_for(role)
    return GenerationBench(
        name=name,
        device=base.placement.device,
        prompt_tokens=len(base.tokenize(prompt)),
        raw=Throughput.of(runs["raw"]),
        pool=Throughput.of(runs["pool"]),
        pool_adapter=Throughput.of(runs["pool_adapter"]),
        same_output=first["raw"].text == first["pool"].text,
    )


def measure_manifest(
    manifest: ModelsManifest,
    workdir: Path,
    *,
    tokens: int = 64,
    repeat: int = 5,
    on_progress: Callable[[str], None] | None = None,
    gpus: list | None = None,
) -> list[GenerationBench]:
    """`measure_generation` for every base of `manifest`, one at a time (only one base and
    its raw twin in memory at once), each with a synthetic adapter written in `workdir`."""
    say = on_progress or (lambda message: None)
    results = []
    manifest = bench_manifest(manifest)
    for spec in manifest.bases:
        verify_base(spec)  # a damaged file is named as such, not as a failed adapter
        say(f"{spec.name}: writing a synthetic adapter")
        path = synthetic_adapter(spec.path, Path(workdir) / f"{spec.name}-synthetic.gguf")
        pool = ModelPool(manifest, log=None, gpus=gpus)
        try:
            say(f"{spec.name}: loading the base twice (pool and raw llama.cpp)")
            base = pool.base_for(bench_role(spec.name))
            llm = raw_llama(spec, base.placement)
            try:
                say(f"{spec.name}: {repeat} round(s) of {tokens} tokens raw, pool, pool+adapter")
                results.append(
                    measure_generation(
                        pool,
                        spec.name,
                        llm,
                        Adapter("synthetic", path),
                        tokens=tokens,
                        repeat=repeat,
                    )
                )
            finally:
                llm.close()
        finally:
            pool.close()
    return results
