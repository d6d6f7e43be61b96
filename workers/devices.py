"""Devices on the torch side: whether this worker has the fleet.devices.Device a job asked for,
how much memory is free, and what the model's parameters really sat on (read back, never
copied from the request)."""

from __future__ import annotations

import functools
import os
import platform
import socket
from typing import Any

import psutil
import torch
import transformers

from fleet.devices import Device
from fleet.errors import CheckFailure, ErrorKind


def check_available(device: Device) -> torch.device:
    """The torch device for a job, or CheckFailure(device_unavailable). Never falls back to cpu."""
    if not device.is_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CheckFailure(ErrorKind.DEVICE_UNAVAILABLE, f"{device} requested but this worker has no CUDA device")
    index = device.index or 0
    # Workers are pinned with CUDA_VISIBLE_DEVICES; cuda:N names the N-th visible device.
    if index >= torch.cuda.device_count():
        raise CheckFailure(
            ErrorKind.DEVICE_UNAVAILABLE,
            f"{device} requested but this worker sees {torch.cuda.device_count()} CUDA device(s)",
        )
    return torch.device("cuda", index)


def free_bytes(dev: torch.device) -> int:
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    return int(psutil.virtual_memory().available)


def read_back(model: torch.nn.Module) -> str:
    """The device(s) the parameters are on, as torch names them (e.g. 'cuda:0')."""
    devices = sorted({str(p.device) for p in model.parameters()})
    return ",".join(devices) if devices else "none"


@functools.cache
def _host_environment() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "host_memory_mb": round(psutil.virtual_memory().total / 2**20),
    }


def environment(dev: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {**_host_environment(), "torch_threads": torch.get_num_threads()}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(
            gpu_name=props.name,
            gpu_memory_mb=round(props.total_memory / 2**20),
            gpu_capability=f"{props.major}.{props.minor}",
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
    return env
