"""The one classifier for what torch, the OS and Python raise while a model is loaded or run."""

from __future__ import annotations

import torch

from fleet.errors import CheckFailure, ErrorKind
from fleet.protocol import ErrorInfo, error_info


def is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text


def kind_of(exc: BaseException, default: ErrorKind) -> ErrorKind:
    """OOM wherever it happens; otherwise the default for the step that raised."""
    return ErrorKind.OOM if is_oom(exc) else default


def describe(exc: BaseException, limit: int = 500) -> str:
    return f"{type(exc).__name__}: {exc}"[:limit]


def load_failure(exc: BaseException, name: str) -> CheckFailure:
    """An exception while building or loading a model, as a CheckFailure of the attempt."""
    kind = kind_of(exc, ErrorKind.LOAD_ERROR)
    if kind == ErrorKind.OOM:
        return CheckFailure(kind, f"{name}: out of memory while loading ({describe(exc, 300)})")
    return CheckFailure(kind, f"{name}: {describe(exc)}")


def job_failure(exc: BaseException) -> ErrorInfo:
    """An unexpected exception in a job (after resolution), with a short traceback."""
    return error_info(kind_of(exc, ErrorKind.INFERENCE_ERROR), describe(exc, 1000), exc=exc)
