"""The core of a worker: run one job from start to result, with no Celery involved.

run_job() never raises for anything a model or the Hub can do: every outcome becomes a
result with a status and, when it failed, an error kind.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import traceback
import weakref
from typing import Any

import torch

from fleet.catalog import Family
from fleet.errors import CheckFailure, ErrorKind
from fleet.protocol import Status, base_result, now
from workers import devices, measure, plugins, resolver
from workers.checks import get_check

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def worker_name() -> str:
    return os.environ.get("FLEET_WORKER_NAME") or socket.gethostname()


def run_job(job: dict[str, Any], delivery: int = 1) -> dict[str, Any]:
    plugins.load()
    result = base_result(job)
    result.update(started_at=now(), worker=worker_name(), delivery=delivery)
    family = Family.from_dict(job["family_spec"])
    device_name = job["device"]
    bundle = resolution = model_ref = None
    sampler = measure.RssSampler()
    dev: torch.device | None = None
    cuda_baseline: int | None = None
    try:
        with sampler, measure.time_limit(job.get("time_limit_s")), measure.memory_limit(family.memory_limit_mb):
            dev = devices.check_available(device_name)
            result["environment"] = devices.environment(dev)
            check = get_check(family.check)
            cuda_baseline = measure.cuda_reset(dev)
            resolution = resolver.resolve(family, check, dev)
            result["attempts"] = resolution.attempts
            if resolution.offline:
                result["environment"]["hub"] = f"offline: {resolution.offline}"
            bundle = resolution.bundle
            if bundle is None:
                raise CheckFailure(ErrorKind.NO_CANDIDATE, _no_candidate_message(resolution.attempts))
            result.update(
                model_used=bundle.name,
                architecture=bundle.architecture,
                source=bundle.source,
                revision=bundle.revision,
                weights_sha256=bundle.weights_sha256,
            )
            model_ref = weakref.ref(bundle.model)
            metrics: dict[str, Any] = result["metrics"]  # filled as measured: kept if a later step fails
            metrics["load_s"] = resolution.attempts[-1]["seconds"]
            metrics.update(measure.model_metrics(bundle.model))
            model_device = devices.read_back(bundle.model)
            result["environment"]["model_device"] = model_device
            if model_device.split(":")[0] != dev.type:
                raise CheckFailure(
                    ErrorKind.LOAD_ERROR, f"parameters sit on {model_device}, not on the requested {device_name}"
                )
            # fills result["output"] (with the quality figure) and metrics before it enforces the gate
            measure.benchmark(check, bundle, dev, int(job.get("repeats") or family.repeats), evidence=result)
            result["status"] = str(Status.SYNTHETIC if bundle.synthetic else Status.REAL)
    except CheckFailure as exc:
        status = Status.SKIPPED if exc.kind == ErrorKind.DEVICE_UNAVAILABLE else Status.FAILED
        result.update(status=str(status), error=exc.to_dict())
    except measure.JobTimeout as exc:
        result.update(status=str(Status.FAILED), error={"kind": str(ErrorKind.TIMEOUT), "message": str(exc)})
    except BaseException as exc:
        if _is_soft_time_limit(exc):
            result.update(
                status=str(Status.FAILED), error={"kind": str(ErrorKind.TIMEOUT), "message": "soft time limit"}
            )
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        else:
            result.update(status=str(Status.FAILED), error=_error_from_exception(exc))
    finally:
        bundle = resolution = None  # the last references to the model: free it before measuring
        gc.collect()
        if model_ref is not None:
            result["metrics"]["model_freed"] = model_ref() is None
        if dev is not None and dev.type == "cuda":
            if cuda_baseline is not None and "latency_ms_p50" in result["metrics"]:  # kept on a failed gate too
                result["metrics"].update(measure.cuda_metrics(dev, cuda_baseline))
            torch.cuda.empty_cache()
            result["metrics"]["cuda_allocated_after_mb"] = round(torch.cuda.memory_allocated(dev) / 2**20, 2)
    result["metrics"]["peak_rss_mb"] = round(sampler.peak / 2**20, 1)
    result["metrics"]["rss_before_mb"] = round(sampler.before / 2**20, 1)
    result["metrics"]["rss_after_mb"] = round(measure.rss_now() / 2**20, 1)
    result["finished_at"] = now()
    result["metrics"]["job_s"] = round(result["finished_at"] - result["started_at"], 3)
    return scrub(result)


def leaves_process_unclean(result: dict[str, Any]) -> str | None:
    """Why the process that ran this job should be replaced, or None. CUDA memory must come
    back to its baseline; host RSS may grow at most FLEET_MAX_RSS_GROWTH_MB per job (unset: no limit)."""
    m = result["metrics"]
    after, baseline = m.get("cuda_allocated_after_mb"), m.get("cuda_baseline_allocated_mb")
    if after is not None and baseline is not None and after > baseline + 1.0:
        return f"CUDA memory did not return to its baseline ({after} MiB allocated, baseline {baseline} MiB)"
    limit = os.environ.get("FLEET_MAX_RSS_GROWTH_MB")
    if limit is not None and m["rss_after_mb"] - m["rss_before_mb"] > float(limit):
        return f"host RSS grew by {m['rss_after_mb'] - m['rss_before_mb']:.0f} MiB in one job (limit {limit})"
    return None


def _no_candidate_message(attempts: list[dict[str, Any]]) -> str:
    kinds = ", ".join(f"{a['candidate']}: {a['error_kind']}" for a in attempts)
    return f"no candidate could be used ({kinds})"


def _is_soft_time_limit(exc: BaseException) -> bool:
    return type(exc).__name__ == "SoftTimeLimitExceeded"


def _error_from_exception(exc: BaseException) -> dict[str, Any]:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text:
        kind = ErrorKind.OOM
    else:
        kind = ErrorKind.INFERENCE_ERROR
    tb = "".join(traceback.format_exception(exc, limit=-4))
    return {"kind": str(kind), "message": text[:1000], "traceback": tb[-2000:]}


def scrub(result: dict[str, Any]) -> dict[str, Any]:
    """Remove any secret from the environment that found its way into the result's text."""
    secrets = [s for s in (os.environ.get(n) for n in SECRET_ENV) if s and len(s) >= 4]
    if not secrets:
        return result
    text = json.dumps(result, default=str)
    for secret in secrets:
        text = text.replace(secret, "***")
    scrubbed: dict[str, Any] = json.loads(text)
    return scrubbed
