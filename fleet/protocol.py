"""The result schema: what one (family, device) job reports, as plain JSON data."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from fleet.errors import ErrorKind


class Status(StrEnum):
    REAL = "REAL"  # named candidate's pretrained weights loaded and the check passed
    SYNTHETIC = "SYNTHETIC"  # no candidate usable; a locally built random-weight model passed
    FAILED = "FAILED"  # the check ran and failed, or every option failed
    SKIPPED = "SKIPPED"  # could not be attempted (no such device on any worker, too large)
    LOST = "LOST"  # no result before the run's deadline


FAILING = (Status.FAILED, Status.LOST)
# Order used to decide whether a change is an improvement or a regression.
RANK = {Status.REAL: 4, Status.SYNTHETIC: 3, Status.SKIPPED: 2, Status.FAILED: 1, Status.LOST: 0}


def job_id(family: str, device: str) -> str:
    return f"{family}@{device}"


def now() -> float:
    return round(time.time(), 3)


def base_result(job: dict[str, Any]) -> dict[str, Any]:
    """Every field of the schema, empty: checks fill in what they observed."""
    return {
        "run_id": job["run_id"],
        "job_id": job["job_id"],
        "family": job["family"],
        "device": job["device"],
        "status": None,
        "model_used": None,
        "architecture": None,
        "source": None,  # hub | cache | local | synthetic
        "revision": None,
        "weights_sha256": None,
        "provenance": {},  # how the weights came to be, e.g. {"conversion": ...} for a GGUF candidate
        "attempts": [],
        "metrics": {},
        "environment": {},
        "output": {},
        "error": None,
        "worker": None,
        "delivery": None,
        "started_at": None,
        "finished_at": None,
    }


def terminal_result(job: dict[str, Any], status: Status, kind: ErrorKind, message: str, **extra: Any) -> dict[str, Any]:
    """A result written without running the check (LOST, SKIPPED, worker_lost, timeout)."""
    result = base_result(job)
    result.update(status=str(status), error={"kind": str(kind), "message": message}, finished_at=now())
    result.update(extra)
    return result


def change(previous: str | None, current: str) -> str:
    if previous is None:
        return "new"
    if previous == current:
        return "unchanged"
    return "improved" if RANK[Status(current)] > RANK[Status(previous)] else "regressed"
