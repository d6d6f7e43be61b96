"""The core of a worker: run one job from start to result, with no Celery involved.

run_job() never raises for anything a model or the Hub can do: every outcome becomes a
result with a status and, when it failed, an error kind.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import socket
import weakref
from pathlib import Path
from typing import Any

import torch

from fleet import pins
from fleet.catalog import Family
from fleet.devices import Device
from fleet.errors import CheckFailure, ErrorKind
from fleet.names import AUTO_CHECK, AUTO_SYNTHETIC_PREFIX
from fleet.protocol import Attempt, ErrorInfo, Job, Result, Status, base_result, error_info, now
from fleet.settings import Settings
from workers import devices, failures, integrity, measure, plugins, resolver
from workers.checks import Check, get_check

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def worker_name(settings: Settings) -> str:
    return settings.worker_name or socket.gethostname()


def run_job(job: Job, delivery: int = 1, settings: Settings | None = None) -> Result:
    settings = settings or Settings.from_env()
    plugins.load(settings.plugins)
    result = base_result(job)
    result["started_at"] = now()
    result["worker"] = worker_name(settings)
    result["delivery"] = delivery
    family = Family.from_dict(job["family_spec"])
    if family.synthetic.startswith(AUTO_SYNTHETIC_PREFIX):  # an architecture job: its task, for coverage
        from workers.tiny.tasks import task_of

        result["task"] = task_of(family)
    device_name = job["device"]
    bundle = resolution = model_ref = None
    sampler = measure.RssSampler()
    dev: torch.device | None = None
    cuda_baseline: int | None = None
    try:
        with sampler, measure.time_limit(job.get("time_limit_s")), measure.memory_limit(family.memory_limit_mb):
            dev = devices.check_available(Device.parse(device_name))
            result["environment"] = devices.environment(dev)
            if family.check == AUTO_CHECK:  # an ad hoc model: the check follows its config's architecture
                family, check = _auto_check(family, settings)
                result["task"] = getattr(check, "task", "")
            else:
                check = get_check(family.check)
            cuda_baseline = measure.cuda_reset(dev)
            resolution = resolver.resolve(family, check, dev, settings)
            result["attempts"] = resolution.attempts
            if resolution.offline:
                result["environment"]["hub"] = f"offline: {resolution.offline}"
            bundle = resolution.bundle
            if resolution.failure is not None:
                raise resolution.failure
            if bundle is None:
                raise CheckFailure(ErrorKind.NO_CANDIDATE, _no_candidate_message(resolution.attempts))
            result["model_used"] = bundle.name
            result["architecture"] = bundle.architecture
            result["source"] = bundle.source
            result["revision"] = bundle.revision
            result["revision_basis"] = bundle.revision_basis
            result["weights_sha256"] = bundle.weights_sha256
            result["weights"] = bundle.weights
            model_ref = weakref.ref(bundle.model)
            metrics: dict[str, Any] = result["metrics"]  # filled as measured: kept if a later step fails
            # hashing and a GGUF conversion are their own metrics, not part of load_s
            hash_s = float(bundle.extra.get("hash_s", 0.0))
            conversion = bundle.extra.get("conversion")
            convert_s = float(conversion["seconds"]) if conversion else 0.0
            metrics["load_s"] = round(max(resolution.attempts[-1]["seconds"] - hash_s - convert_s, 0.0), 4)
            if bundle.weights is not None:
                metrics.update(hash_s=hash_s, hash_cached=bundle.extra.get("hash_cached"))
            if conversion:  # a GGUF candidate: its conversion is provenance
                result["provenance"] = {"conversion": conversion}
                metrics["convert_s"] = convert_s
            metrics.update(measure.model_metrics(bundle.model))
            if "parameters_loaded" in bundle.extra:
                metrics["parameters_loaded"] = bundle.extra["parameters_loaded"]
            model_device = devices.read_back(bundle.model)
            result["environment"]["model_device"] = model_device
            if model_device.split(":")[0] != dev.type:
                raise CheckFailure(
                    ErrorKind.LOAD_ERROR, f"parameters sit on {model_device}, not on the requested {device_name}"
                )
            # fills result["output"] (with the quality figure) and metrics before it enforces the gate
            output, _timing = measure.benchmark(
                check, bundle, dev, int(job.get("repeats") or family.repeats), evidence=result
            )
            if bundle.hashed is not None:  # weights are memory-mapped: a write in place would reach the model
                integrity.unchanged(bundle.hashed, "after load")
            if not bundle.synthetic:  # known answer: compared with the job's pins (fleet/pins.py)
                output["known_answer"] = pins.judge(
                    job.get("pins", []),
                    bundle.name,
                    bundle.revision,
                    bundle.weights_sha256,
                    device_name,
                    check.fingerprint(output),
                    check.tolerance(),
                )
                output["known_answer"]["check"] = check.name
            result["status"] = str(Status.SYNTHETIC if bundle.synthetic else Status.REAL)
    except CheckFailure as exc:
        # a device that is not there, or a model our harness cannot build or feed yet: not a model failure
        status = (
            Status.SKIPPED
            if exc.kind in (ErrorKind.DEVICE_UNAVAILABLE, ErrorKind.HARNESS_UNSUPPORTED)
            else Status.FAILED
        )
        _end(result, status, error_info(exc.kind, exc.message, exc.data))
    except measure.JobTimeout as exc:
        _end(result, Status.FAILED, error_info(ErrorKind.TIMEOUT, str(exc)))
    except BaseException as exc:
        if _is_soft_time_limit(exc):
            _end(result, Status.FAILED, error_info(ErrorKind.TIMEOUT, "soft time limit"))
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        else:
            _end(result, Status.FAILED, failures.job_failure(exc))
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
    result["finished_at"] = finished = now()
    result["metrics"]["job_s"] = round(finished - (result["started_at"] or finished), 3)
    return scrub(result)


def _auto_check(family: Family, settings: Settings) -> tuple[Family, Check]:
    """The architecture the first candidate's config names, and the check of its task."""
    from workers import hub
    from workers.checks.forward import for_architecture

    cand = family.candidates[0]
    if cand.path:
        config_file = Path(cand.path).expanduser() / "config.json"
    else:
        assert cand.id is not None
        config_file = hub.fetch_file(cand.id, "config.json", cand.revision, settings.hub_timeout_s)
    try:
        archs = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckFailure(ErrorKind.NO_CONFIG, f"{cand.name}: no readable config.json ({exc})") from None
    if not archs or not isinstance(archs[0], str):
        raise CheckFailure(ErrorKind.UNSUPPORTED_ARCHITECTURE, f"{cand.name}: config names no architecture")
    check = for_architecture(archs[0])
    return dataclasses.replace(family, check=check.name, architectures=(archs[0],)), check


def _end(result: Result, status: Status, error: ErrorInfo) -> None:
    result["status"] = str(status)
    result["error"] = error


def leaves_process_unclean(result: Result, settings: Settings) -> str | None:
    """Why the process that ran this job should be replaced, or None. CUDA memory must come
    back to its baseline; host RSS may grow at most FLEET_MAX_RSS_GROWTH_MB per job (unset: no limit)."""
    m = result["metrics"]
    after, baseline = m.get("cuda_allocated_after_mb"), m.get("cuda_baseline_allocated_mb")
    if after is not None and baseline is not None and after > baseline + 1.0:
        return f"CUDA memory did not return to its baseline ({after} MiB allocated, baseline {baseline} MiB)"
    limit = settings.max_rss_growth_mb
    if limit is not None and m["rss_after_mb"] - m["rss_before_mb"] > limit:
        return f"host RSS grew by {m['rss_after_mb'] - m['rss_before_mb']:.0f} MiB in one job (limit {limit})"
    return None


def _no_candidate_message(attempts: list[Attempt]) -> str:
    kinds = ", ".join(f"{a['candidate']}: {a['error_kind']}" for a in attempts)
    return f"no candidate could be used ({kinds})"


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
