"""The run lifecycle: deadlines, LOST and SKIPPED, finishing, waiting.

The store only reads and writes; the rules live here. Commands that own a run (submit --wait,
run, the schedule) call finalize_if_due(), which also folds the finished run into the per-job
summaries (orchestrator.summaries); commands that only read (status, report) call view(), which
shows what the run's final state would be without writing anything of the run.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet import records
from fleet.devices import QUEUES
from fleet.errors import ErrorKind, RedisUnreachable, StoreCorrupt
from fleet.protocol import Job, Result, Status, terminal_result
from fleet.redelivery import OrphanWatch, restore_orphans
from fleet.store import ResultStore
from orchestrator import summaries

RESTORE_CHECK_S = 10.0
logger = logging.getLogger("orchestrator.runs")


def unserved_result(job: Job, served_queues: set[str]) -> Result | None:
    """SKIPPED (no_worker) when no live worker serves the job's queue, else None."""
    if job["queue"] in served_queues:
        return None
    msg = f"no live worker serves queue {job['queue']!r} (device {job['device']})"
    return terminal_result(job, Status.SKIPPED, ErrorKind.NO_WORKER, msg)


def lost_result(job: Job, deadline_s: float) -> Result:
    return terminal_result(
        job, Status.LOST, ErrorKind.WORKER_LOST, f"no result before the run deadline ({deadline_s:.0f} s)"
    )


def missing_results(store: ResultStore, run_id: str, meta: dict[str, Any], have: set[str]) -> list[Result]:
    """What every job without a result ends as at the deadline: SKIPPED when no live worker
    serves its queue, otherwise LOST."""
    served = store.registry.served_queues()
    out = []
    for jid, job in store.jobs(run_id).items():
        if jid in have:
            continue
        job_corrupt, meta_corrupt = records.corruption(job), records.corruption(meta)
        if job_corrupt:  # the job cannot be known: reported as its corrupt record
            out.append(records.corrupt_result(run_id, jid, job_corrupt, what="job spec"))
        elif meta_corrupt:
            why = f"no result, and {meta_corrupt}"
            out.append(terminal_result(job, Status.LOST, ErrorKind.CORRUPT_RECORD, why))
        else:
            out.append(unserved_result(job, served) or lost_result(job, meta["deadline_s"]))
    return out


def skip_unserved(store: ResultStore, run_id: str, served_queues: set[str]) -> int:
    """Jobs whose queue no worker serves end SKIPPED (no_worker) now. Used by the embedded
    run, which knows every worker there will be."""
    have = {r["job_id"] for r in store.results(run_id)}
    skipped = 0
    for jid, job in store.jobs(run_id).items():
        result = unserved_result(job, served_queues) if jid not in have and not records.is_corrupt(job) else None
        if result is not None:
            skipped += store.put_result(result, only_if_absent=True)
    return skipped


def finalize_if_due(store: ResultStore, run_id: str) -> bool:
    """Past the deadline, every job without a result is written as LOST or SKIPPED and the
    run is marked finished. Returns whether the run is finished."""
    if store.is_finished(run_id):
        _fold(store)
        return True
    meta = store.meta(run_id)
    if time.time() < meta["deadline"]:
        return False
    have = {r["job_id"] for r in store.results(run_id)}
    for result in missing_results(store, run_id, meta, have):
        store.put_result(result, only_if_absent=True)
    store.mark_finished(run_id)
    drop_expired(store)
    _fold(store)
    return True


def _fold(store: ResultStore) -> None:
    """Fold finished runs into the summaries: derived data, which never fails finalisation (a
    failure is logged and the summaries are left for `orchestrator history --rebuild-summaries`)."""
    try:
        summaries.catch_up(store)
    except RedisUnreachable:
        raise
    except Exception as exc:
        logger.warning("the per-job summaries were not updated (%r): %s", exc, summaries.REBUILD)


def abandon(store: ResultStore, run_id: str, why: str) -> int:
    """Finalise a run now: every job without a result ends LOST (why), the run is finished."""
    have = {r["job_id"] for r in store.results(run_id)}
    lost = 0
    for jid, job in store.jobs(run_id).items():
        if jid not in have:
            lost += store.put_result(terminal_result(job, Status.LOST, ErrorKind.WORKER_LOST, why), only_if_absent=True)
    store.mark_finished(run_id)
    return lost


def _job_of(raw: str, run_id: str) -> str | None:
    """The job id of a queued message of this run (its argsrepr: "[JOB_ID of RUN_ID...]"), or None."""
    try:
        shown = json.loads(raw).get("headers", {}).get("argsrepr")
    except (ValueError, AttributeError):
        return None
    if not isinstance(shown, str) or not shown.startswith("["):
        return None
    for end in (f" of {run_id}]", f" of {run_id},"):
        if end in shown:
            return shown[1 : shown.index(end)]
    return None


def _of_run(raw: str, run_id: str) -> bool:
    """Whether a queued message is a job of this run."""
    return _job_of(raw, run_id) is not None


def placed_job_ids(store: ResultStore, run_id: str, queues: tuple[str, ...] = QUEUES) -> set[str]:
    """The jobs of this run a worker has or can still get: queued, held unacknowledged by a
    worker, or begun (a delivery counted). What a submit interrupted midway must not publish again."""
    raws = [raw for q in queues for raw in store.transport.queued(q)] + store.transport.unacked_messages()
    placed = {job for raw in raws if (job := _job_of(raw, run_id)) is not None}
    return placed | set(store.attempts(run_id))


def withdraw(store: ResultStore, run_id: str, queues: tuple[str, ...] = QUEUES) -> int:
    """Undo a submit that failed midway: the run's queued messages and every key of the run are
    removed (deleting is allowed even when Redis is out of memory). Returns messages removed."""
    dropped = _drop_queued(store, queues, lambda raw: _of_run(raw, run_id))
    store.delete_run(run_id)
    return dropped


def _drop_queued(store: ResultStore, queues: tuple[str, ...], which: Callable[[str], bool]) -> int:
    """Remove the queued messages `which` picks from these queues; returns how many."""
    transport = store.transport
    return sum(transport.drop_queued(q, [raw for raw in transport.queued(q) if which(raw)]) for q in queues)


def _expired(raw: str, now: float) -> bool:
    try:
        expires = json.loads(raw).get("headers", {}).get("expires")
        return bool(expires) and datetime.fromisoformat(expires).timestamp() <= now
    except (ValueError, TypeError, AttributeError):
        return False


def drop_expired(store: ResultStore, queues: tuple[str, ...] = QUEUES) -> int:
    """Queued messages past their expiry (the run's deadline) are removed, so that a queue with
    no consumer (a GPU queue on a fleet without GPUs) drains and autoscalers see it empty."""
    now = time.time()
    return _drop_queued(store, queues, lambda raw: _expired(raw, now))


@dataclass
class RunView:
    """A run as it stands, or as it will end when its deadline has passed (nothing written)."""

    meta: dict[str, Any]
    results: list[Result]
    total: int
    finished: bool

    @property
    def counts(self) -> Counter[str]:
        return Counter(str(r["status"]) for r in self.results)


def view(store: ResultStore, run_id: str) -> RunView:
    meta = store.meta(run_id)
    results = store.results(run_id)
    total = store.job_count(run_id)
    finished = meta["finished_at"] is not None
    if not finished and time.time() >= meta["deadline"]:
        have = {r["job_id"] for r in results}
        results = sorted(results + missing_results(store, run_id, meta, have), key=lambda r: r["job_id"])
        finished = True
    return RunView(meta, results, total, finished)


def wait(
    store: ResultStore,
    run_id: str,
    on_progress: Callable[[int, int, Counter[str]], None] | None = None,
    poll_s: float = 0.5,
    reconnect_s: float = 120.0,
    gone: Callable[[], str | None] | None = None,
) -> Counter[str]:
    """Block until the run is finished (all results, or the deadline passed). Survives a
    Redis restart for up to reconnect_s. Each poll reads every result (for the counts per
    status), so large runs are polled less often: at least every total/4000 s. When the
    redelivery bookkeeping is corrupt (fleet:held of another type), the wait goes on without it
    (one warning): jobs of dead workers then come back after the visibility timeout. gone: the
    reason no result can come any more (a fleet whose workers all exited), or None; the run's
    jobs without a result then end LOST with that reason at once."""
    last_ok = time.monotonic()
    last_restore = 0.0
    watch = OrphanWatch()
    while True:
        try:
            if time.monotonic() - last_restore >= RESTORE_CHECK_S:
                try:
                    restore_orphans(store, watch)  # jobs of workers that died: delivered again
                    last_restore = time.monotonic()
                except StoreCorrupt as exc:
                    print(
                        f"orchestrator: warning: {exc.message}; jobs of dead workers come back only after the "
                        "visibility timeout",
                        file=sys.stderr,
                    )
                    last_restore = float("inf")  # not tried again in this wait
            done, total, counts = store.progress(run_id)
            poll_s = max(poll_s, total / 4000)
            if on_progress:
                on_progress(done, total, counts)
            why = gone() if gone is not None else None
            if why is not None:  # nothing can answer the rest: its jobs end LOST now, not at the deadline
                abandon(store, run_id, why)
            if why is not None or finalize_if_due(store, run_id):
                done, total, counts = store.progress(run_id)
                if on_progress:
                    on_progress(done, total, counts)
                return counts
            last_ok = time.monotonic()
        except RedisUnreachable:
            watch.lost_contact()
            if time.monotonic() - last_ok > reconnect_s:
                raise
        time.sleep(poll_s)
