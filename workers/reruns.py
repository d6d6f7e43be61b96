"""Flaky triage: a FAILED job runs again, in a fresh process, before its result is reported.

When a job ends FAILED for a reason that may not repeat (an inference error, a timeout, an
OOM...), the task keeps the outcome as a rerun record in Redis, publishes the same job again
with `rerun` + 1 and has its pool process replaced (as after a job that leaves the process
unclean: the delivery ends normally, acknowledged, and the process exits before its next job,
workers/app.py _replace_process), so the rerun starts in a fresh process. Only the final result is written to the
results hash, so counting completion (HLEN results == jobs) is unchanged. The final result
carries every outcome (`reruns`) and `pass_ratio`; failed then passed is FLAKY.

Not rerun: reasons that are facts about the weights or the catalog, which a rerun would only
confirm (DETERMINISTIC), SKIPPED and LOST, a job already given up after dying on every delivery,
and a hard time limit (the worker's main process writes that result). An architecture twin (a
seeded synthetic model of a class, run by the built-in forward/generate check) is the same model
with the same inputs in every process: its exception in forward, or on cpu an output that fails validation, is a fact
too (SEEDED_DETERMINISTIC), and so is its load_error when the twin was the only candidate tried
(the class cannot be built from the seeded config); only what depends on the host's load (oom, a lost worker)
or, on a GPU, on its kernels is rerun. A twin's timeout on cpu is not rerun either (HOST_BOUND): the
same model and inputs, so only the host's load decides it, and a rerun in the same run comes last
and holds the run's tail (measured: the reruns of SamModel's and SamHQModel's timeouts were the
last two minutes of the CLI's architecture run, one pool process idle). The report classes it a
host miss, and the next run is the rerun that can tell: it orders the job first (longest-first
from this run's durations), on whatever host serves it. Measured: a fresh process per rerun cost each of the 84
failing classes of the architecture matrix a new interpreter with torch and transformers. A
catalog family's synthetic last resort is still rerun: its check may be a plugin's, whose
outcome need not be a function of the seed.
"""

from __future__ import annotations

import os
from typing import Any

from fleet.errors import ErrorKind
from fleet.names import AUTO_SYNTHETIC_PREFIX as AUTO
from fleet.protocol import PASSED, Job, Result, Status, now

TWIN = f"synthetic:{AUTO}"  # the candidate name of an architecture twin (workers/tiny/synthetic.py)

DETERMINISTIC = frozenset(
    {
        str(ErrorKind.WEIGHTS_CORRUPT),
        str(ErrorKind.WEIGHTS_INCOMPLETE),
        str(ErrorKind.ARCHITECTURE_MISMATCH),
        str(ErrorKind.UNSUPPORTED_ARCHITECTURE),
        str(ErrorKind.UNSAFE_WEIGHTS),
        str(ErrorKind.NO_CONFIG),
        str(ErrorKind.TOO_LARGE),
        str(ErrorKind.QUALITY_GATE),
        str(ErrorKind.DEGENERATE_WEIGHTS),
        "not_allowed",  # a trust policy refusal (branch hardening): the same policy refuses again
    }
)

# Kinds a seeded synthetic model repeats exactly on a rerun: per device type.
SEEDED_DETERMINISTIC: dict[str, frozenset[str]] = {
    "cpu": frozenset({str(ErrorKind.INFERENCE_ERROR), str(ErrorKind.OUTPUT_INVALID), str(ErrorKind.LOAD_ERROR)}),
    "cuda": frozenset({str(ErrorKind.INFERENCE_ERROR), str(ErrorKind.LOAD_ERROR)}),  # GPU kernels may differ
}


# Kinds of a seeded twin that depend only on the host, not worth a rerun within the run: per device type.
HOST_BOUND: dict[str, frozenset[str]] = {"cpu": frozenset({str(ErrorKind.TIMEOUT)})}


def rerun_number(job: Job) -> int:
    return int(job.get("rerun", 0) or 0)


def counter(job: Job) -> str:
    """The delivery counter of this run of the job: reruns count apart from the first run."""
    n = rerun_number(job)
    return job["job_id"] if n == 0 else f"{job['job_id']}#{n}"


def wants_rerun(result: Result, job: Job) -> bool:
    if result["status"] != Status.FAILED or rerun_number(job) >= int(job.get("reruns", 0) or 0):
        return False
    error = result.get("error")
    kind = error["kind"] if error else None
    if kind in DETERMINISTIC:
        return False
    spec = job.get("family_spec", {})
    twin = str(spec.get("synthetic", "")).startswith(AUTO)
    # an architecture job has no candidates: whatever it was doing, it was the twin (a timeout
    # while the twin was still being built leaves no attempt to tell by: Emu3Model, rerun last)
    nothing_else = not result.get("source") and not spec.get("candidates")
    if twin and (result.get("source") == "synthetic" or only_the_twin_tried(result) or nothing_else):
        device = str(result.get("device") or job.get("device") or "cpu").split(":", 1)[0]
        none = frozenset[str]()
        return kind not in SEEDED_DETERMINISTIC.get(device, none) | HOST_BOUND.get(device, none)
    return True


def only_the_twin_tried(result: Result) -> bool:
    """Every candidate the job tried was its seeded twin (no weights from anywhere else): a
    twin that could not be built (load_error) cannot be built in a fresh process either."""
    attempts = result.get("attempts") or []
    return bool(attempts) and all(str(a.get("candidate", "")).startswith(TWIN) for a in attempts)


def record(result: Result, job: Job) -> dict[str, Any]:
    err: dict[str, Any] = dict(result.get("error") or {})
    return {
        "rerun": rerun_number(job),
        "status": result["status"],
        "error_kind": err.get("kind"),
        "message": str(err.get("message", ""))[:300],
        "worker": result.get("worker"),
        "delivery": result.get("delivery"),
        "pid": os.getpid(),  # a rerun runs in a fresh process: a different pid
        "started_at": result.get("started_at"),
        "finished_at": result.get("finished_at"),  # its busy time (orchestrator.accounting)
    }


def next_job(job: Job) -> Job:
    nxt: Job = {**job}
    nxt["rerun"] = rerun_number(job) + 1
    nxt["sent_at"] = now()  # its own queue wait starts now
    return nxt


def final(result: Result, job: Job, earlier: list[dict[str, Any]]) -> Result:
    """The result to report after the job's reruns: FAILED when every run failed, FLAKY when
    some passed (with the first failure as its error), unchanged when it was never rerun."""
    if rerun_number(job) == 0 or not earlier:
        return result
    runs = [*earlier, record(result, job)]
    passed = sum(1 for r in runs if r["status"] in PASSED)
    result["reruns"] = runs
    result["pass_ratio"] = round(passed / len(runs), 3)
    if 0 < passed < len(runs):
        first = next(r for r in runs if r["status"] not in PASSED)
        result["status"] = str(Status.FLAKY)
        result["error"] = {
            "kind": first["error_kind"] or str(ErrorKind.INTERNAL),
            "message": f"failed {len(runs) - passed} of {len(runs)} runs (first: {first['message']})",
        }
    return result
