"""The single error hierarchy of model-fleet.

Every error the CLI can show derives from FleetError and carries its exit code. Errors
that cross a process or broker boundary travel as data (see ErrorKind and to_dict), never
as pickled exceptions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ExitCode:
    OK = 0
    INTERNAL = 1
    BAD_INPUT = 2  # malformed catalog, unknown family or device, bad option
    UNREACHABLE = 3  # Redis cannot be reached
    NOT_FOUND = 4  # run id or file that does not exist
    RUN_FAILED = 5  # the run finished with FAILED or LOST jobs
    REDIS_FULL = 6  # Redis refused a write: out of memory (maxmemory); nothing of the run was left
    STORE_CORRUPT = 7  # a fleet key in Redis holds another type than the fleet keeps there (WRONGTYPE)
    INTERRUPTED = 130


class ErrorKind(StrEnum):
    """Why a candidate was passed over or a job failed. Stable strings: they are data."""

    NOT_FOUND = "not_found"
    GATED = "gated"
    AUTH = "auth"
    OFFLINE_NOT_CACHED = "offline_not_cached"
    HUB_UNAVAILABLE = "hub_unavailable"
    HUB_TIMEOUT = "hub_timeout"
    UNSUPPORTED_ARCHITECTURE = "unsupported_architecture"
    ARCHITECTURE_MISMATCH = "architecture_mismatch"
    NO_CONFIG = "no_config"
    TOO_LARGE = "too_large"
    UNSAFE_WEIGHTS = "unsafe_weights"
    LOAD_ERROR = "load_error"
    WEIGHTS_CORRUPT = "weights_corrupt"  # bytes differ from what their source claims, or changed during load
    WEIGHTS_INCOMPLETE = "weights_incomplete"  # a parameter not taken from the checkpoint, or tensors left unused
    RESOLVE_ERROR = "resolve_error"  # an unexpected error while locating or validating a candidate
    OOM = "oom"
    INFERENCE_ERROR = "inference_error"
    DEVICE_FAULT = "device_fault"  # a CUDA error that poisons the process (device-side assert, illegal access)
    OUTPUT_INVALID = "output_invalid"
    KNOWN_ANSWER_MISMATCH = "known_answer_mismatch"  # output differs from the pinned known answer
    IDENTITY_MISMATCH = "identity_mismatch"  # the bytes are pinned or locked as another model (fleet/lock.py)
    SIZE_MISMATCH = "size_mismatch"  # the checkpoint is far from the size the catalog gives the candidate
    QUALITY_GATE = "quality_gate"  # complete weights whose outputs show no pretraining
    DEGENERATE_WEIGHTS = "degenerate_weights"  # constant weight matrices, or one output for different inputs
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    DEVICE_UNAVAILABLE = "device_unavailable"
    NO_WORKER = "no_worker"
    NO_CANDIDATE = "no_candidate"
    HARNESS_UNSUPPORTED = "harness_unsupported"  # our synthetic builder cannot build or feed this model yet
    BAD_JOB = "bad_job"  # a job message a worker cannot act on (fleet.jobs)
    NOT_ALLOWED = "not_allowed"  # the job asked for something this worker was not started to allow
    CORRUPT_RECORD = "corrupt_record"  # what the store holds for this job cannot be read (fleet.records)
    INTERNAL = "internal"


class FleetError(Exception):
    """Root of every model-fleet error."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(FleetError):
    exit_code = ExitCode.BAD_INPUT


class UnknownJob(BadInput):
    """A result or a job message names a run and a job id that is not one of that run's jobs."""

    def __init__(self, run_id: str, job_id: str) -> None:
        super().__init__(f"job {job_id[:300]!r} is not a job of run {run_id[:300]!r}")


class NotTheRunsJob(UnknownJob):
    """A job message names one of the run's jobs but carries another job: its fields differ from
    the job the run stored when it was submitted (a copy pushed onto a queue by whoever can write
    Redis), or it claims a rerun the run never published."""

    def __init__(self, run_id: str, job_id: str, why: str) -> None:
        BadInput.__init__(
            self, f"the message for job {job_id[:300]!r} of run {run_id[:300]!r} is not the run's job: {why[:300]}"
        )


class CatalogError(BadInput):
    """A catalog file that cannot be used; the message names the file and the entry."""


class SelectionError(BadInput):
    """An unknown family or device was asked for."""


class PinsError(BadInput):
    """A pins file that cannot be used; the message names the file and the entry."""


class LockError(BadInput):
    """A model lock file that cannot be used; the message names the file and the entry."""


class RedisUnreachable(FleetError):
    exit_code = ExitCode.UNREACHABLE


class RedisOutOfMemory(FleetError):
    """Redis refused a write because it is at its maxmemory (noeviction)."""

    exit_code = ExitCode.REDIS_FULL


class StoreCorrupt(FleetError):
    """A key of the store holds something the fleet never writes there: another Redis type
    (WRONGTYPE), or bytes that are not text. fleet.store.connection raises it; the store's readers
    turn it into a corrupt record of the run where they can (fleet.records), and where nothing
    sensible can be shown (the list of runs itself) it is the command's one-line error."""

    exit_code = ExitCode.STORE_CORRUPT


class RunNotFound(FleetError):
    exit_code = ExitCode.NOT_FOUND


class FileMissing(FleetError):
    exit_code = ExitCode.NOT_FOUND


class RunFailed(FleetError):
    exit_code = ExitCode.RUN_FAILED


class ServiceError(FleetError):
    """A process we start (redis-server, a worker) did not come up."""


class CheckFailure(FleetError):
    """A candidate or a check failed for a known reason (kind) with details (data)."""

    def __init__(self, kind: ErrorKind, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.data = data or {}

    @property
    def reported(self) -> str:
        """The message as a job's result reports it."""
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """As data (fleet.protocol.ErrorInfo), for crossing a process or broker boundary."""
        from fleet.protocol import error_info

        return dict(error_info(self.kind, self.reported, self.data))


class IntegrityFailure(CheckFailure):
    """A candidate's files are not what they claim to be (weights_corrupt, weights_incomplete,
    architecture_mismatch of the class built, size_mismatch). Raised where the fact is found
    (workers/integrity.py) and carried unchanged to the job's result: it ends the resolution,
    never falling back to another candidate or the synthetic model, which would hide it.
    `candidate` names the candidate whose files they are, once the resolver knows it."""

    def __init__(self, kind: ErrorKind, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(kind, message, data)
        self.candidate: str | None = None

    @property
    def reported(self) -> str:
        """The message as the job reports it: prefixed with the candidate, when known."""
        return f"{self.candidate}: {self.message}" if self.candidate else self.message
