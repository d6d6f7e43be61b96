"""The core of a worker: run one job from start to result, with no Celery involved.

run_job() never raises for anything a model or the Hub can do: every outcome becomes a
result with a status and, when it failed, an error kind. It reads as the job's stages
(workers/stages.py), each handing a typed result to the next.
"""

from __future__ import annotations

import json
import os
import socket

from fleet.catalog import Family
from fleet.errors import CheckFailure, ErrorKind
from fleet.protocol import ErrorInfo, Job, Result, Status, error_info, now
from fleet.settings import Settings
from workers import failures, identity, measure, plugins, process, quality, stages
from workers.tiny import default_config_lacks, missing_package

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def worker_name(settings: Settings) -> str:
    return settings.worker_name or socket.gethostname()


def run_job(job: Job, delivery: int = 1, settings: Settings | None = None) -> Result:
    """The job's stages in order, each handing its typed result on (kept in `progress`); the
    first to raise ends the job with its error, and the Result is assembled from what was handed on."""
    settings = settings or Settings.from_env()
    plugins.load(settings.plugins)
    progress = stages.Progress(job, delivery, worker_name(settings), started_at=now())
    ran_in = process.begin_job()
    family = Family.from_dict(job["family_spec"])
    progress.task = stages.architecture_task(family)
    sampler = measure.RssSampler()
    resolution: stages.Resolution | None = None
    try:
        with sampler, measure.time_limit(job.get("time_limit_s")), measure.memory_limit(family.memory_limit_mb):
            on_device = progress.on_device = stages.device(job["device"])
            plan = progress.plan = stages.plan(family, settings)
            progress.cuda_baseline = measure.cuda_reset(on_device.dev)
            resolution = progress.resolution = stages.resolve(plan, on_device, settings, progress.trail)
            placement = progress.placement = stages.place(resolution.bundle)
            stages.gate_on_device(placement, on_device, job["device"])
            if not resolution.bundle.synthetic:  # constant or all-zero weight matrices: degenerate_weights
                quality.refuse_degenerate_weights(resolution.bundle.model)
            repeats = int(job.get("repeats") or plan.family.repeats)
            measurement = progress.measurement = stages.measure_check(plan, resolution.bundle, on_device, repeats)
            stages.gate_quality(measurement)
            stages.gate_unchanged(resolution.evidence)
            if resolution.bundle.synthetic:
                progress.status = Status.SYNTHETIC
            else:  # identity (fleet/lock.py), then the known answer (fleet/pins.py), then REAL or UNVERIFIED
                progress.identity = stages.gate_identity(job, plan, resolution, settings)
                progress.known_answer = stages.gate_known_answer(job, plan, resolution, measurement)
                verdict = identity.decide(progress.identity, measurement)
                progress.identity, progress.status = verdict.record, verdict.status
            progress.variants = stages.run_variants(
                job,
                plan,
                resolution.bundle,
                resolution.evidence.weights_sha256,
                on_device,
                progress.status,
                home=settings.home,
            )
    except CheckFailure as exc:
        # a device that is not there, or a model our harness cannot build or feed yet: not a model failure
        status = (
            Status.SKIPPED
            if exc.kind in (ErrorKind.DEVICE_UNAVAILABLE, ErrorKind.HARNESS_UNSUPPORTED)
            else Status.FAILED
        )
        _end(progress, status, error_info(exc.kind, exc.reported, exc.data))
    except measure.JobTimeout as exc:
        _end(progress, Status.FAILED, error_info(ErrorKind.TIMEOUT, str(exc)))
    except BaseException as exc:
        if _is_soft_time_limit(exc):
            _end(progress, Status.FAILED, error_info(ErrorKind.TIMEOUT, "soft time limit"))
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        elif missing := missing_package(exc):  # an optional package the project does not install: the harness's
            why = " ".join(f"{failures.describe(exc, 200)}: {missing}".split())
            _end(progress, Status.SKIPPED, error_info(ErrorKind.HARNESS_UNSUPPORTED, why))
        elif lacks := _default_config_lacks(progress, exc):  # a twin's failure its default config repeats
            _end(progress, Status.FAILED, error_info(ErrorKind.INFERENCE_ERROR, lacks))
        else:
            _end(progress, Status.FAILED, failures.job_failure(exc))
    finally:
        resolution = None  # the progress now holds the model's last reference: release() drops it
        progress.release = stages.release(progress)
    result = stages.assemble(progress, sampler)
    result["process"] = ran_in
    return scrub(result)


def _default_config_lacks(progress: stages.Progress, exc: BaseException) -> str | None:
    bundle = progress.resolution.bundle if progress.resolution is not None else None
    return default_config_lacks(bundle.model, exc) if bundle is not None and bundle.synthetic else None


def _end(progress: stages.Progress, status: Status, error: ErrorInfo) -> None:
    progress.status = status
    progress.error = error


def leaves_process_unclean(result: Result, settings: Settings) -> str | None:
    """Why the process that ran this job should be replaced, or None. A device fault poisons it
    (workers/process.py); CUDA memory must come back to its baseline; host RSS may grow at most
    FLEET_MAX_RSS_GROWTH_MB per job (unset: no limit)."""
    poisoned = process.poisoned()
    if poisoned:
        return poisoned
    m = result["metrics"]
    after, baseline = m.get("cuda_allocated_after_mb"), m.get("cuda_baseline_allocated_mb")
    if after is not None and baseline is not None and after > baseline + 1.0:
        return f"CUDA memory did not return to its baseline ({after} MiB allocated, baseline {baseline} MiB)"
    limit = settings.max_rss_growth_mb
    if limit is not None and m["rss_after_mb"] - m["rss_before_mb"] > limit:
        return f"host RSS grew by {m['rss_after_mb'] - m['rss_before_mb']:.0f} MiB in one job (limit {limit})"
    return None


def _is_soft_time_limit(exc: BaseException) -> bool:
    return type(exc).__name__ == "SoftTimeLimitExceeded"


def scrub(result: Result) -> Result:
    """Remove any secret from the environment that found its way into the result's text."""
    secrets = [s for s in (os.environ.get(n) for n in SECRET_ENV) if s and len(s) >= 4]
    if not secrets:
        return result
    text = json.dumps(result, default=str)
    for secret in secrets:
        text = text.replace(secret, "***")
    scrubbed: Result = json.loads(text)
    return scrubbed
