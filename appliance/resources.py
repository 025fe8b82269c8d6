"""The box's resources for `forge status`, the dashboard and the daemon: CPU, memory and
disk through psutil, GPUs through NVML when the NVIDIA driver is there (none otherwise)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import psutil

from appliance.serving.placement import device_name, nvml


def gpus() -> list[dict]:
    """One entry per NVIDIA GPU: utilisation, memory, temperature; [] without a driver."""
    with nvml() as (pynvml, devices):
        try:
            return [_gpu(pynvml, index, handle) for index, handle in devices]
        except Exception:  # a driver that opens but does not answer: report none
            return []


def _gpu(pynvml, index: int, handle) -> dict:
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return {
        "index": index,
        "name": device_name(pynvml, handle),
        "util_percent": pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
        "memory_used_bytes": memory.used,
        "memory_total_bytes": memory.total,
        "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
    }


def gpu_count() -> int:
    """GPUs the daemon may give heavy jobs (CUDA_VISIBLE_DEVICES, if set, narrows them)."""
    return len(job_gpus())


def job_gpus(held: Sequence[int] = ()) -> list[str]:
    """The GPUs (as CUDA_VISIBLE_DEVICES names them) the daemon may give heavy jobs: those
    visible (CUDA_VISIBLE_DEVICES, if set, narrows them) but the ones `forge serve` holds
    (`serve.gpus`)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    else:
        ids = [str(gpu["index"]) for gpu in gpus()]
    taken = {str(index) for index in held}
    return [gpu for gpu in ids if gpu not in taken]


def snapshot(home: Path) -> dict:
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(home))
    return {
        "cpu": {
            "cores": psutil.cpu_count() or 1,
            "percent": psutil.cpu_percent(interval=0.1),
            "load": list(os.getloadavg()),
        },
        "memory": {
            "total_bytes": memory.total,
            "used_bytes": memory.total - memory.available,
            "percent": memory.percent,
        },
        "disk": {
            "path": str(home),
            "total_bytes": disk.total,
            "free_bytes": disk.free,
            "percent": disk.percent,
        },
        "gpus": gpus(),
    }
