"""Expanding a selection of the catalog into (family, device) jobs and enqueueing them."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from fleet import __version__, variants
from fleet import lock as locking
from fleet.catalog import Catalog
from fleet.collector import collector_paused
from fleet.devices import Device
from fleet.errors import RedisOutOfMemory, RedisUnreachable
from fleet.jobs import MAX_LOCK, stored_text
from fleet.protocol import Job, Result, job_id, now
from fleet.retrying import MAX_DELAY_S, retry_redis, says_out_of_memory
from fleet.settings import RunSettings
from fleet.store import ResultStore, new_run_id
from fleet.timing import DEFAULT_VISIBILITY_S, check_visibility, default_deadline, hard_time_limit
from orchestrator import architectures
from orchestrator import pins as pinning
from orchestrator import publish as publishing
from orchestrator.runs import placed_job_ids, withdraw

__all__ = ["hard_time_limit", "plan_jobs", "submit"]
logger = logging.getLogger("orchestrator.submit")
PUBLISH_RETRY_S = 60.0  # how long a submit waits for a Redis that went away midway


def as_devices(devices: Sequence[Device | str]) -> list[Device]:
    return [d if isinstance(d, Device) else Device.parse(d) for d in devices]


def plan_jobs(
    run_id: str,
    catalog: Catalog,
    families: list[str] | None,
    devices: Sequence[Device | str],
    settings: RunSettings,
    pins: list[dict[str, Any]] | None = None,
    lock: list[dict[str, Any]] | None = None,
) -> list[Job]:
    """pins: known answers (orchestrator.pins), lock: model lock entries (fleet.lock); None for
    the shipped ones only."""
    pins = pinning.load() if pins is None else pins
    lock = locking.load() if lock is None else lock
    jobs: list[Job] = []
    for fam in catalog.select(families):
        for device in as_devices(devices):
            time_limit = settings.time_limit_s or fam.time_limit_s
            spec = fam.to_dict()
            spec.pop("description", None)  # for people, not workers: it stays out of every message
            job: Job = {
                "run_id": run_id,
                "job_id": job_id(fam.name, str(device)),
                "family": fam.name,
                "device": str(device),
                "queue": device.queue,
                "family_spec": spec,
                "time_limit_s": time_limit,
                "repeats": settings.repeats or fam.repeats,
                "max_attempts": settings.max_attempts,
                "pins": pinning.for_job(pins, fam, device),
                "lock": locking.for_job(lock, fam.names(), MAX_LOCK),
                "reruns": settings.reruns,
                "rerun": 0,
            }
            if settings.variants:
                job["variants"] = variants.names(variants.parse(settings.variants, fam.variants))
            task = architectures.task_of(fam.name, fam.description)
            if task:  # an architecture job: the task counts it even if it never reports itself
                job["task"] = task
            jobs.append(job)
    return jobs


def order_longest_first(jobs: list[Job], previous: list[Result]) -> list[Job]:
    """Longest expected job first, from the previous run's durations; unknown ones count as longest."""
    took = {
        r["job_id"]: finished - started
        for r in previous
        if (started := r.get("started_at")) and (finished := r.get("finished_at"))
    }
    return sorted(jobs, key=lambda j: -took.get(j["job_id"], float("inf")))


@collector_paused()
def submit(
    store: ResultStore,
    app: Celery,
    catalog: Catalog,
    families: list[str] | None,
    devices: Sequence[Device | str],
    settings: RunSettings,
    order: str = "longest-first",
    run_id: str | None = None,
    origin: str = "cli",
    pins: list[dict[str, Any]] | None = None,
    extra_meta: dict[str, Any] | None = None,
    lock: list[dict[str, Any]] | None = None,
) -> str:
    """Record the run, then publish every job over one connection. Returns the run id.
    extra_meta: more run meta (an architecture run records its transformers version)."""
    run_id = run_id or new_run_id()
    jobs = plan_jobs(run_id, catalog, families, devices, settings, pins, lock)
    if order == "longest-first":
        prev = store.run_ids(1)
        jobs = order_longest_first(jobs, store.results(prev[0]) if prev else [])
    visibility = float(app.conf.broker_transport_options.get("visibility_timeout", DEFAULT_VISIBILITY_S))
    limits = [j["time_limit_s"] for j in jobs]
    check_visibility(limits, visibility)
    deadline_s = settings.deadline_s or default_deadline(limits, visibility)
    started = now()
    expires = datetime.fromtimestamp(started + deadline_s, UTC)  # queues drain at the deadline
    meta = {
        "run_id": run_id,
        "started_at": started,
        "deadline": started + deadline_s,
        "deadline_s": deadline_s,
        "catalog": catalog.source,
        "families": sorted({j["family"] for j in jobs}),
        "devices": [str(d) for d in as_devices(devices)],
        "total": len(jobs),
        "origin": origin,
        "orchestrator_version": __version__,
        "workers_at_submit": store.registry.live_workers(),
        **(extra_meta or {}),
    }
    encoded = {j["job_id"]: stored_text(dict(j)) for j in jobs}  # once: the run's record and the messages
    store.create_run(meta, jobs, encoded)
    try:
        _publish_all(store, app, run_id, jobs, encoded, expires)
    except Exception as exc:  # kombu raises OperationalError and friends (redis' OutOfMemoryError too)
        # All or nothing: the run and whatever of it was queued are removed again.
        with contextlib.suppress(RedisUnreachable):
            withdraw(store, run_id)
        if says_out_of_memory(exc):
            raise RedisOutOfMemory(
                f"Redis is out of memory: could not enqueue the jobs of run {run_id}; nothing of it was kept "
                "(raise maxmemory or remove old runs with FLEET_KEEP_RUNS)"
            ) from None
        if isinstance(exc, RedisUnreachable):
            raise RedisUnreachable(f"could not enqueue jobs for run {run_id}: {exc.message}") from None
        raise RedisUnreachable(f"could not enqueue jobs for run {run_id}: {exc}") from None
    return run_id


def _publish_all(
    store: ResultStore, app: Celery, run_id: str, jobs: list[Job], encoded: dict[str, str], expires: datetime
) -> None:
    """Publish every job, riding out a Redis that goes away midway (a restart) for up to
    PUBLISH_RETRY_S: once it answers again, the jobs of the run already placed (queued, held by
    a worker, begun) are kept and only the others are published again. A batch whose pipeline
    failed may have been written in part, or lost with an unsynced AOF: the queue, not the
    attempt, says what is there, so each job is queued once. Anything else raises."""
    deadline = time.monotonic() + PUBLISH_RETRY_S
    delay = 0.2
    pending = jobs
    while True:
        try:
            publishing.publish(app, pending, expires, encoded)
            return
        except Exception as exc:
            if says_out_of_memory(exc) or not _connection_lost(exc) or time.monotonic() + delay > deadline:
                raise
            logger.warning("Redis went away while publishing run %s (%s); publishing the rest again", run_id, exc)
        time.sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)
        left = max(0.0, deadline - time.monotonic())
        placed = retry_redis(lambda: _placed(store, run_id), timeout_s=left)
        pending = [j for j in jobs if j["job_id"] not in placed]


def _placed(store: ResultStore, run_id: str) -> set[str]:
    store.meta(run_id)  # RunNotFound when Redis came back without the run (an AOF not yet synced)
    return placed_job_ids(store, run_id)


def _connection_lost(exc: BaseException) -> bool:
    """Whether a publish failed because the connection to Redis did (kombu wraps redis-py's error)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (redis.ConnectionError, redis.TimeoutError, ConnectionError, RedisUnreachable)):
            return True
        if isinstance(seen, OperationalError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unserved_devices(store: ResultStore, devices: Sequence[Device]) -> list[Device]:
    served = store.registry.served_queues()
    return [d for d in devices if d.queue not in served]


class ProgressBar:
    """done/total and counts per status, redrawn in place on a terminal, line by line otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""

    def __call__(self, done: int, total: int, counts: Counter[str]) -> None:
        width = 24
        filled = int(width * done / total) if total else width
        summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {summary}"
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.stream.write("\r" + line)
            if done >= total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
