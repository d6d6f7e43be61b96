"""The stages of one job, in the order workers/core.py's run_job runs them. Each is a function
whose typed result the next stages take, recorded in Progress as it is handed on, so a stage
that fails leaves every earlier fact for the result:

    device        -> OnDevice      the requested device, available in this process
    plan          -> Plan          the family and its check (an ad hoc job's from its config)
    resolve       -> Resolution    the bundle and its load evidence (workers/resolver.py)
    place         -> Placement     where the parameters sit (read back) and the model's size
    measure       -> Measurement   output, quality record, timings (workers/measure.py)
    gates                          on the device, quality, bytes unchanged, known answer: each
                                   raises the one error its fact calls for, where it is known
    variants      -> dict          capability variants on the same loaded weights, once the
                                   status is decided (workers/variants.py); never changes it
    release       -> Release       the model freed, memory back to its baseline
    assemble      -> Result        the one place a Result is written

A further stage slots in as one more function and one more field of Progress.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fleet import pins
from fleet.catalog import Family
from fleet.devices import Device
from fleet.errors import CheckFailure, ErrorKind
from fleet.names import AUTO_CHECK, AUTO_SYNTHETIC_PREFIX
from fleet.protocol import ErrorInfo, Job, Result, Status, base_result, now
from fleet.settings import Settings
from workers import devices, identity, integrity, measure, quality, resolver, variants
from workers.checks import Check, get_check
from workers.checks.base import Bundle
from workers.evidence import LoadEvidence
from workers.measure import Measurement
from workers.resolver import Resolution, Trail


@dataclass(frozen=True)
class OnDevice:
    dev: torch.device
    environment: dict[str, Any]  # devices.environment(): library versions, the device's name


@dataclass(frozen=True)
class Plan:
    family: Family  # an ad hoc job's: with the check and architecture its config names
    check: Check
    task: str | None = None  # an ad hoc job's task, for coverage


@dataclass(frozen=True)
class Placement:
    model_device: str  # read back from the model's parameters, not from the request
    model_metrics: dict[str, Any]  # parameters, weight_bytes, dtype (measure.model_metrics)


@dataclass(frozen=True)
class Release:
    model_freed: bool | None  # None when no model was loaded
    cuda: dict[str, Any]  # cuda_* metrics: empty off CUDA


@dataclass
class Progress:
    """What the stages have handed on so far."""

    job: Job
    delivery: int
    worker: str
    started_at: float
    task: str | None = None  # an architecture job's task, known before anything runs
    on_device: OnDevice | None = None
    plan: Plan | None = None
    cuda_baseline: int | None = None
    trail: Trail = field(default_factory=Trail)
    resolution: Resolution | None = None
    placement: Placement | None = None
    measurement: Measurement | None = None
    known_answer: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None  # the weights' identity (workers/identity.py); None for synthetic
    status: Status | None = None
    error: ErrorInfo | None = None
    variants: dict[str, Any] | None = None  # result["variants"] (workers/variants.py)
    release: Release | None = None


# -- the stages, in order ---------------------------------------------------------------------
def architecture_task(family: Family) -> str | None:
    """An architecture job's task (its family is built by workers/tiny), else None."""
    if not family.synthetic.startswith(AUTO_SYNTHETIC_PREFIX):
        return None
    from workers.tiny.tasks import task_of

    return task_of(family)


def device(name: str) -> OnDevice:
    dev = devices.check_available(Device.parse(name))
    return OnDevice(dev, devices.environment(dev))


def plan(family: Family, settings: Settings) -> Plan:
    if family.check == AUTO_CHECK:  # an ad hoc model: the check follows its config's architecture
        family, check = _auto_check(family, settings)
        return Plan(family, check, getattr(check, "task", ""))
    return Plan(family, get_check(family.check))


def resolve(plan: Plan, on_device: OnDevice, settings: Settings, trail: Trail) -> Resolution:
    return resolver.resolve(plan.family, plan.check, on_device.dev, settings, trail)


def place(bundle: Bundle) -> Placement:
    return Placement(devices.read_back(bundle.model), measure.model_metrics(bundle.model))


def gate_on_device(placement: Placement, on_device: OnDevice, requested: str) -> None:
    if placement.model_device.split(":")[0] != on_device.dev.type:
        raise CheckFailure(
            ErrorKind.LOAD_ERROR, f"parameters sit on {placement.model_device}, not on the requested {requested}"
        )


def measure_check(plan: Plan, bundle: Bundle, on_device: OnDevice, repeats: int) -> Measurement:
    return measure.benchmark(plan.check, bundle, on_device.dev, repeats)


def gate_quality(measurement: Measurement) -> None:
    quality.enforce(measurement.quality)


def gate_unchanged(evidence: LoadEvidence) -> None:
    """Weights are memory-mapped: a write in place since the load would have reached the model."""
    if evidence.hashed is not None:
        integrity.unchanged(evidence.hashed, "after load")


def gate_identity(job: Job, plan: Plan, resolution: Resolution, settings: Settings) -> dict[str, Any]:
    """The files read against the job's model lock: the identity record (workers/identity.py),
    or weights_corrupt / identity_mismatch raised where the lock says the bytes are not the model."""
    bundle = resolution.bundle
    return identity.judge(job, plan.family, bundle.name, bundle.revision, resolution.evidence, settings)


def gate_known_answer(job: Job, plan: Plan, resolution: Resolution, measurement: Measurement) -> dict[str, Any]:
    """The output against the job's pins (fleet/pins.py): the known-answer record, or
    known_answer_mismatch, identity_mismatch or weights_corrupt raised by pins.judge."""
    bundle = resolution.bundle
    known = pins.judge(
        job.get("pins", []),
        bundle.name,
        bundle.revision,
        resolution.evidence.weights_sha256,
        job["device"],
        plan.check.fingerprint(measurement.output),
        plan.check.tolerance(),
        alias=identity.alias_of(plan.family, bundle.name),
        converted=resolution.evidence.conversion is not None,
    )
    known["check"] = plan.check.name
    return known


def run_variants(
    job: Job,
    plan: Plan,
    bundle: Bundle,
    weights: str | None,
    on_device: OnDevice,
    status: Status,
    home: Path | None = None,
) -> dict[str, Any] | None:
    """The job's capability variants (job["variants"]) on the loaded model, once it passed; None
    when it asked for none. Pretrained weights (REAL, UNVERIFIED) run the quality gate in every
    reduced precision, and their check's fingerprint per precision/attention variant is judged
    against the job's pins scoped to that variant (fleet/pins.py; `weights`: the digest loaded).
    `home`: the worker's state folder, where the job's crash journal is kept while its variants run
    (workers/variants.py Journal)."""
    wanted = job.get("variants") or []
    if not wanted:
        return None
    real = status != Status.SYNTHETIC
    known_answer = (
        functools.partial(
            pins.judge,
            job.get("pins", []),
            bundle.name,
            bundle.revision,
            weights,
            job["device"],
            alias=identity.alias_of(plan.family, bundle.name),
        )
        if real
        else None
    )
    digest = hashlib.sha256(f"{job.get('run_id')}\0{job.get('job_id')}".encode()).hexdigest()[:32]
    journal = home / "variants-running" / f"{digest}.json" if home is not None else None
    return variants.run(
        plan.check, bundle, on_device.dev, wanted, real=real, known_answer=known_answer, journal=journal
    )


def release(progress: Progress) -> Release:
    """Drop the last references to the model, collect, and read what memory came back. The
    resolution keeps its names and evidence for the result."""
    model_ref = None
    if progress.resolution is not None:
        bundle = progress.resolution.bundle
        model_ref = weakref.ref(bundle.model)
        progress.resolution = dataclasses.replace(progress.resolution, bundle=bundle.without_model())
        del bundle
    gc.collect()
    cuda: dict[str, Any] = {}
    dev = progress.on_device.dev if progress.on_device is not None else None
    if dev is not None and dev.type == "cuda":
        if progress.cuda_baseline is not None and progress.measurement is not None:  # kept on a failed gate too
            cuda.update(measure.cuda_metrics(dev, progress.cuda_baseline))
        torch.cuda.empty_cache()
        cuda["cuda_allocated_after_mb"] = round(torch.cuda.memory_allocated(dev) / 2**20, 2)
    return Release(model_ref() is None if model_ref is not None else None, cuda)


def assemble(progress: Progress, sampler: measure.RssSampler) -> Result:
    """The job's Result, from what the stages handed on (the schema of fleet.protocol.Result)."""
    result = base_result(progress.job)
    result["started_at"] = progress.started_at
    result["worker"] = progress.worker
    result["delivery"] = progress.delivery
    task = progress.plan.task if progress.plan is not None and progress.plan.task is not None else progress.task
    if task is not None:
        result["task"] = task
    environment: dict[str, Any] = dict(progress.on_device.environment) if progress.on_device else {}
    result["attempts"] = progress.trail.attempts
    if progress.trail.offline:
        environment["hub"] = f"offline: {progress.trail.offline}"
    metrics: dict[str, Any] = result["metrics"]
    if progress.resolution is not None:
        bundle, evidence = progress.resolution.bundle, progress.resolution.evidence
        result["model_used"] = bundle.name
        result["architecture"] = bundle.architecture
        result["source"] = bundle.source
        result["revision"] = bundle.revision
        result["revision_basis"] = evidence.revision_basis
        result["weights_sha256"] = evidence.weights_sha256
        result["weights"] = evidence.weights.to_dict() if evidence.weights is not None else None
        metrics["load_s"] = evidence.load_s  # hashing and a GGUF conversion are their own metrics
        if evidence.weights is not None:
            metrics.update(hash_s=evidence.hash_s, hash_cached=evidence.hash_cached)
        if evidence.conversion:  # a GGUF candidate: its conversion is provenance
            result["provenance"] = {"conversion": evidence.conversion}
            metrics["convert_s"] = evidence.convert_s
        if progress.placement is not None:
            metrics.update(progress.placement.model_metrics)
            if evidence.parameters_loaded is not None:
                metrics["parameters_loaded"] = evidence.parameters_loaded
    if progress.identity is not None:
        result["identity"] = progress.identity
    if progress.placement is not None:
        environment["model_device"] = progress.placement.model_device
    result["environment"] = environment
    if progress.measurement is not None:  # kept when a gate fails: everything measured stays
        result["output"] = dict(progress.measurement.output)
        metrics.update(progress.measurement.timing)
        if progress.known_answer is not None:
            result["output"]["known_answer"] = progress.known_answer
    if progress.variants is not None:
        result["variants"] = progress.variants
    result["status"] = str(progress.status) if progress.status is not None else None
    result["error"] = progress.error
    if progress.release is not None:
        if progress.release.model_freed is not None:
            metrics["model_freed"] = progress.release.model_freed
        metrics.update(progress.release.cuda)
    metrics["peak_rss_mb"] = round(sampler.peak / 2**20, 1)
    metrics["rss_before_mb"] = round(sampler.before / 2**20, 1)
    metrics["rss_after_mb"] = round(measure.rss_now() / 2**20, 1)
    result["finished_at"] = finished = now()
    metrics["job_s"] = round(finished - (result["started_at"] or finished), 3)
    return result


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
