"""Where each base model runs: which GPU, how many layers offloaded, or the CPU.

On a machine with NVIDIA GPUs (found through NVML) each base without an explicit
placement in models.toml goes whole onto the GPU with the most free memory left, one
base per GPU while there are GPUs to spare. Without GPUs everything runs on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from appliance.models.manifest import BaseModelFile


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    free_bytes: int
    total_bytes: int
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Placement:
    gpu_layers: int  # -1 all, 0 none
    main_gpu: int
    tensor_split: tuple[float, ...]
    device: str  # "cpu" or "cuda:N" (the main GPU), in words for `forge models list`


CPU = Placement(gpu_layers=0, main_gpu=0, tensor_split=(), device="cpu")


@contextmanager
def nvml() -> Iterator[tuple[Any, list[tuple[int, Any]]]]:
    """(pynvml, [(index, handle), …]) while NVML is open; (None, []) when there is no
    driver or no GPU. appliance.resources reads utilisation and temperature through it."""
    try:
        # NVML: loaded only where GPUs are probed (absent on a CPU box)
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py, no libnvidia-ml, no driver: a CPU box
        yield None, []
        return
    try:
        count = pynvml.nvmlDeviceGetCount()
        yield pynvml, [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def device_name(pynvml, handle) -> str:
    name = pynvml.nvmlDeviceGetName(handle)
    return name.decode() if isinstance(name, bytes) else name


def detect_gpus() -> list[Gpu]:
    """NVIDIA GPUs through NVML; empty when there are none or no driver."""
    with nvml() as (pynvml, devices):
        gpus = []
        for index, handle in devices:
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                capability = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            except pynvml.NVMLError:
                capability = None
            gpus.append(
                Gpu(index, device_name(pynvml, handle), memory.free, memory.total, capability)
            )
        return gpus


def plan(bases: Sequence[BaseModelFile], gpus: Sequence[Gpu]) -> dict[str, Placement]:
    """A placement per base name. Explicit settings in models.toml are kept as written."""
    free = {gpu.index: gpu.free_bytes for gpu in gpus}
    used: set[int] = set()
    result = {}
    # Pinned bases first (they claim their GPUs), then the largest, so the biggest model
    # gets the emptiest GPU left.
    for base in sorted(bases, key=lambda b: (b.gpu_layers is None, -_size(b))):
        if base.gpu_layers is not None:
            main = base.main_gpu or 0
            device = "cpu" if base.gpu_layers == 0 or not gpus else f"cuda:{main}"
            result[base.name] = Placement(base.gpu_layers, main, base.tensor_split, device)
            if device != "cpu":
                free[main] = free.get(main, 0) - _size(base)
                used.add(main)
            continue
        if not gpus:
            result[base.name] = CPU
            continue
        # Prefer a GPU no other base uses yet; among those, the one with most free memory.
        index = max(free, key=lambda i: (i not in used, free[i]))
        free[index] -= _size(base)
        used.add(index)
        result[base.name] = Placement(-1, index, base.tensor_split, f"cuda:{index}")
    return result


def _size(base: BaseModelFile) -> int:
    try:
        return base.path.stat().st_size
    except OSError:
        return 0
