"""The messages that cross the broker and the store, as typed JSON data.

A Job goes from the orchestrator to a worker; a Result comes back (one per job, written to the
store); Attempts record each candidate the resolver tried; ErrorInfo says why something failed.
They are plain dicts on the wire (JSON), typed here so that every producer and consumer agrees.
"""

from __future__ import annotations

import time
import traceback
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

from fleet.errors import ErrorKind
from fleet.numbers import finite, sent_at_problem


class Status(StrEnum):
    REAL = "REAL"  # named candidate's weights, vouched for by the official Hub or a lock, and its quality gate passed
    UNVERIFIED = "UNVERIFIED"  # a candidate's weights passed, but nobody but their supplier vouches for them
    SYNTHETIC = "SYNTHETIC"  # no candidate usable; a locally built random-weight model passed
    FAILED = "FAILED"  # the check ran and failed, or every option failed
    FLAKY = "FLAKY"  # failed, then passed on a rerun in a fresh process (result["pass_ratio"])
    SKIPPED = "SKIPPED"  # could not be attempted (no such device on any worker, too large)
    LOST = "LOST"  # no result before the run's deadline


FAILING = (Status.FAILED, Status.LOST)
# A job that passed, whatever the weights: the run-to-run comparisons and trends use these.
PASSED: tuple[str, ...] = (Status.REAL, Status.UNVERIFIED, Status.SYNTHETIC)
# Final once written: a result that arrives later is kept as a late attempt, never in their place.
SEALED: tuple[str, ...] = (Status.LOST, Status.SKIPPED)
# Order used to decide whether a change is an improvement or a regression (also the report's scores).
# UNVERIFIED sits between REAL and SYNTHETIC: pretrained-looking weights that passed every check,
# whose identity no one outside their supplier vouches for (workers/identity.py).
# FLAKY sits between SYNTHETIC and SKIPPED: it did pass, but not every time.
RANK: dict[str, int] = {
    Status.REAL: 6,
    Status.UNVERIFIED: 5,
    Status.SYNTHETIC: 4,
    Status.FLAKY: 3,
    Status.SKIPPED: 2,
    Status.FAILED: 1,
    Status.LOST: 0,
}
STATUSES: tuple[str, ...] = tuple(str(s) for s in sorted(Status, key=lambda s: -RANK[s]))


class ErrorInfo(TypedDict):
    kind: str  # an ErrorKind value
    message: str
    data: NotRequired[dict[str, Any]]
    traceback: NotRequired[str]


class Attempt(TypedDict):
    candidate: str
    outcome: str  # loaded | skipped | failed
    error_kind: str | None
    detail: str
    seconds: float
    data: NotRequired[dict[str, Any]]  # what the failure measured (e.g. both digests)


class Job(TypedDict):
    run_id: str
    job_id: str  # family@device
    family: str
    device: str  # cpu | cuda | cuda:N
    queue: str
    family_spec: dict[str, Any]  # fleet.catalog.Family.to_dict()
    time_limit_s: float
    repeats: int
    max_attempts: int
    pins: NotRequired[list[dict[str, Any]]]  # known answers for this family's candidates (fleet/pins.py)
    lock: NotRequired[list[dict[str, Any]]]  # model lock entries, this family's candidates first (fleet/lock.py)
    reruns: NotRequired[int]  # how many times a FAILED job is run again before it is reported (default 0)
    rerun: NotRequired[int]  # which run of the job this message is: 0 first, 1.. reruns
    task: NotRequired[str]  # architecture jobs: the class's transformers task (kept by every terminal result)
    sent_at: NotRequired[float]  # when the orchestrator (or a worker publishing a rerun) sent it
    variants: NotRequired[list[str]]  # capability variants to run after the reference (fleet/variants.py)


class Result(TypedDict):
    run_id: str
    job_id: str
    family: str
    device: str
    status: str | None
    model_used: str | None
    architecture: str | None
    source: str | None  # hub | cache | local | synthetic
    revision: str | None
    revision_basis: str | None  # hub | mirror | cache_ref | package_record | content_digest | claimed
    weights_sha256: str | None  # sha256 of the bytes loaded (several shards: see workers/integrity.py)
    weights: dict[str, Any] | None  # {"files": {name: sha256}, "digest", "claims": [...], "verified_by": [...]}
    provenance: dict[str, Any]  # how the weights came to be, e.g. {"conversion": ...} for a GGUF candidate
    attempts: list[Attempt]
    metrics: dict[str, Any]
    environment: dict[str, Any]
    output: dict[str, Any]
    error: ErrorInfo | None
    worker: str | None
    delivery: int | None
    started_at: float | None
    finished_at: float | None
    # Set only when the job was rerun after a failure (RunSettings.reruns): every outcome in
    # order, and the share of them that passed.
    reruns: NotRequired[list[dict[str, Any]]]  # [{status, error_kind, message, worker, delivery, rerun}]
    pass_ratio: NotRequired[float]
    # Architecture jobs (family "arch:<Class>") only: the transformers task of the class.
    task: NotRequired[str]
    # When the job was sent (its Job's sent_at): queue wait is started_at - sent_at.
    sent_at: NotRequired[float]
    # The pool process that ran the job: {"pid", "jobs" (1: its first job, a fresh process),
    # "started_at" (when the process started)}. A process poisoned by a device fault is replaced
    # after its job, so the next job shows another pid and jobs 1.
    process: NotRequired[dict[str, Any]]
    # A candidate's load: every file read with its sha256, their digest, what anchors them (the
    # official Hub, a lock entry, or nothing), and, when UNVERIFIED, why and what would anchor them.
    identity: NotRequired[dict[str, Any]]
    # A job that asked for variants: the reference, the class's claims, one verdict per variant and
    # the findings (workers/variants.py; schema in docs/variants.md).
    variants: NotRequired[dict[str, Any]]


def job_id(family: str, device: str) -> str:
    return f"{family}@{device}"


def now() -> float:
    return round(time.time(), 3)


def error_info(
    kind: ErrorKind | str,
    message: str,
    data: dict[str, Any] | None = None,
    exc: BaseException | None = None,
) -> ErrorInfo:
    """The one way to build an ErrorInfo (kind, message, optional data and short traceback)."""
    info: ErrorInfo = {"kind": str(ErrorKind(kind)), "message": message[:1000]}
    if data:
        info["data"] = data
    if exc is not None:
        info["traceback"] = "".join(traceback.format_exception(exc, limit=-4))[-2000:]
    return info


def base_result(job: Job) -> Result:
    """Every field of the schema, empty: checks fill in what they observed (and the job's
    sent_at, kept for its queue wait)."""
    result: Result = {
        "run_id": job["run_id"],
        "job_id": job["job_id"],
        "family": job["family"],
        "device": job["device"],
        "status": None,
        "model_used": None,
        "architecture": None,
        "source": None,
        "revision": None,
        "revision_basis": None,
        "weights_sha256": None,
        "weights": None,
        "provenance": {},
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
    sent = finite(job.get("sent_at"))
    if sent is not None and sent_at_problem(sent) is None:  # a refused job's may be anything: kept when sound
        result["sent_at"] = sent
    return result


def terminal_result(job: Job, status: Status, kind: ErrorKind, message: str, **extra: Any) -> Result:
    """A result written without running the check (LOST, SKIPPED, worker_lost, timeout)."""
    result = base_result(job)
    if isinstance(job.get("task"), str):  # a LOST or killed architecture job still counts under its task
        result["task"] = job["task"]
    result["status"] = str(status)
    result["error"] = error_info(kind, message)
    result["finished_at"] = now()
    result.update(extra)  # type: ignore[typeddict-item]
    return result


def change(previous: str | None, current: str) -> str:
    if previous is None:
        return "new"
    if previous == current:
        return "unchanged"
    return "improved" if RANK[current] > RANK[previous] else "regressed"
