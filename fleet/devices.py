"""Devices as the fleet names them: `cpu`, `cuda` (any GPU) and `cuda:N` (the N-th GPU a
worker sees). One parser, one mapping to queues; nothing here touches torch."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.errors import SelectionError

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)
_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d{1,3}))?$")


@dataclass(frozen=True, order=True)
class Device:
    type: str  # cpu | cuda
    index: int | None = None  # cuda:N; None for cpu and for "any GPU"

    @classmethod
    def parse(cls, text: str) -> Device:
        m = _DEVICE_RE.match(text.strip())
        if not m or (m.group(1) == "cpu" and m.group(2) is not None):
            raise SelectionError(f"unknown device {text!r} (expected cpu, cuda or cuda:N)")
        return cls(m.group(1), int(m.group(2)) if m.group(2) is not None else None)

    @property
    def queue(self) -> str:
        """cpu jobs go to 'cpu'; cuda and cuda:N jobs to 'gpu' (served by one worker per GPU)."""
        return CPU_QUEUE if self.type == "cpu" else GPU_QUEUE

    @property
    def is_gpu(self) -> bool:
        return self.type == "cuda"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def parse_devices(text: str) -> list[Device]:
    """A comma-separated device list, without duplicates, in the order given."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise SelectionError("no device given (expected e.g. cpu,cuda)")
    bad = []
    devices: list[Device] = []
    for name in names:
        try:
            devices.append(Device.parse(name))
        except SelectionError:
            bad.append(name)
    if bad:
        raise SelectionError(f"unknown device {', '.join(repr(b) for b in bad)} (expected cpu, cuda or cuda:N)")
    return list(dict.fromkeys(devices))
