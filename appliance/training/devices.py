"""Where a training run goes: CPU or CUDA, which float type, and whether Unsloth may be used.

`decide` is the rule, a pure function of the facts; `choose_device` gathers the facts from
this machine. Pascal (compute capability 6.x, e.g. the P40) has no bf16 and Unsloth does not
support it; bf16 needs Ampere (8.0) or later.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

BF16_CAPABILITY = (8, 0)
UNSLOTH_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class DeviceChoice:
    device: Literal["cpu", "cuda"]
    dtype: Literal["fp32", "fp16", "bf16"]
    unsloth: bool
    reason: str


def decide(
    cuda_available: bool, capability: tuple[int, int] | None, unsloth_importable: bool
) -> DeviceChoice:
    """The device, float type and Unsloth use for these hardware facts."""
    if not cuda_available or capability is None:
        return DeviceChoice("cpu", "fp32", False, "no CUDA device: CPU, fp32")
    cc = f"{capability[0]}.{capability[1]}"
    if capability >= BF16_CAPABILITY:
        dtype, why = "bf16", f"compute capability {cc} ≥ 8.0 has bf16"
    else:
        dtype, why = "fp16", f"compute capability {cc} < 8.0 has no bf16"
    unsloth = unsloth_importable and capability >= UNSLOTH_CAPABILITY
    if unsloth:
        extra = "Unsloth available"
    elif unsloth_importable:
        extra = f"Unsloth installed but needs compute capability ≥ 7.0, not {cc}"
    else:
        extra = "Unsloth not installed"
    return DeviceChoice("cuda", dtype, unsloth, f"CUDA: {why}, so {dtype}; {extra}")


def choose_device() -> DeviceChoice:
    """Decide for this machine's first CUDA device (or its CPU)."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    cuda = torch.cuda.is_available()
    capability = torch.cuda.get_device_capability(0) if cuda else None
    # Found, not imported: importing Unsloth without a GPU raises, and it patches transformers.
    unsloth = importlib.util.find_spec("unsloth") is not None
    return decide(cuda, capability, unsloth)


@contextmanager
def torch_threads(threads: int):
    """Run torch on `threads` CPU threads inside the block (0: leave torch's setting)."""
    # torch: loaded only by the process that trains or embeds, not by every importer
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
