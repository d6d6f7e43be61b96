"""The one classifier for what torch, the OS and Python raise while a model is loaded or run."""

from __future__ import annotations

import torch

from fleet.errors import CheckFailure, ErrorKind
from fleet.protocol import ErrorInfo, error_info
from workers import process

# CUDA errors after which the process's CUDA context is unusable ("sticky" errors): every later
# kernel launch in the same process fails too. Matched in the exception's text, lower case.
DEVICE_FAULTS = (
    "device-side assert triggered",
    "an illegal memory access was encountered",
    "illegal instruction was encountered",
    "unspecified launch failure",
    "misaligned address",
    "uncorrectable ecc error",
    "cudaerrorillegaladdress",
    "cudaerrorassert",
    "cudaerrorlaunchfailure",
)


def is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text


def device_fault(exc: BaseException) -> str | None:
    """The sticky CUDA error an exception reports, or None (see DEVICE_FAULTS)."""
    text = str(exc).lower()
    return next((marker for marker in DEVICE_FAULTS if marker in text), None)


def kind_of(exc: BaseException, default: ErrorKind) -> ErrorKind:
    """OOM wherever it happens; a device fault (which also marks this process poisoned, to be
    replaced after the job: workers/process.py); otherwise the default for the step that raised."""
    if is_oom(exc):
        return ErrorKind.OOM
    fault = device_fault(exc)
    if fault is not None:
        process.poison(f"device fault: {fault}")
        return ErrorKind.DEVICE_FAULT
    return default


def describe(exc: BaseException, limit: int = 500) -> str:
    return f"{type(exc).__name__}: {exc}"[:limit]


def load_failure(exc: BaseException, name: str) -> CheckFailure:
    """An exception while building or loading a model, as a CheckFailure of the attempt."""
    kind = kind_of(exc, ErrorKind.LOAD_ERROR)
    if kind == ErrorKind.OOM:
        return CheckFailure(kind, f"{name}: out of memory while loading ({describe(exc, 300)})")
    if kind == ErrorKind.DEVICE_FAULT:
        return CheckFailure(kind, f"{name}: device fault while loading ({describe(exc, 300)})")
    return CheckFailure(kind, f"{name}: {describe(exc)}")


def job_failure(exc: BaseException) -> ErrorInfo:
    """An unexpected exception in a job (after resolution), with a short traceback."""
    return error_info(kind_of(exc, ErrorKind.INFERENCE_ERROR), describe(exc, 1000), exc=exc)
