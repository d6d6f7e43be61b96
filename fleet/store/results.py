"""Runs and their results in Redis: run metadata, jobs, results, attempt counts, reruns and
late attempts; and ResultStore, which also carries the transport and registry parts.

Redis I/O only: what a result means (LOST, SKIPPED, when a run is over) is decided by
orchestrator.runs. Each job writes its own result into a per-run hash keyed by job id
("family@device"), so a repeated delivery overwrites instead of adding a row. Completion is
counted here (HLEN), not with Celery chords (fleet/store/put_result.lua). Every redis-py error
becomes RedisUnreachable in one place: fleet.store.connection.

A run's key of another Redis type (StoreCorrupt from fleet.store.connection) is read as a corrupt
record of that run (fleet.records): the jobs or results hash as one placeholder row named after
the key, e.g. `(results)`, FAILED `corrupt_record`; the run and every other run still report.
The list of runs (fleet:runs) of another type leaves nothing to show: StoreCorrupt is raised.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import redis

from fleet import archive, records
from fleet.errors import NotTheRunsJob, RedisOutOfMemory, RunNotFound, StoreCorrupt, UnknownJob
from fleet.jobs import differing_fields, stored_text
from fleet.protocol import SEALED, Job, Result, now
from fleet.retrying import retry_redis
from fleet.settings import Settings, redact_url
from fleet.store import keys
from fleet.store.connection import connect
from fleet.store.ledger import Ledger, Taker, finished_script, started_script
from fleet.store.registry import Registry
from fleet.store.summaries import Summaries
from fleet.store.transport import Transport

logger = logging.getLogger("fleet.store")

T = TypeVar("T")
JOBS_KEY, RESULTS_KEY = "(jobs)", "(results)"  # the row that stands for a run's whole corrupt hash


class _Script:
    """A Lua script of this package (see the file) and its digest: EVALSHA sends it only once."""

    def __init__(self, name: str) -> None:
        self.text = (resources.files("fleet.store") / name).read_text()
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()


_PUT_RESULT = _Script("put_result.lua")
_BEGIN = _Script("begin.lua")


def new_run_id() -> str:
    """Sortable and unique: UTC time, then a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class ResultStore:
    """Runs and results; .transport (queues, held deliveries), .registry (workers,
    architectures, schedule slots, saved reports), .ledger (who took which job, what is
    running) and .summaries (per-job summaries, counts of finished runs) share its one
    connection."""

    def __init__(
        self, url: str, keep_runs: int = 200, redis_ca: str | None = None, archive_dir: Path | None = None
    ) -> None:
        self.url = url
        self.keep_runs = keep_runs  # retention: the newest keep_runs runs are kept
        self.archive_dir = archive_dir  # where a pruned run's results go (fleet.archive); None: nowhere
        self._r = connect(url, redis_ca)
        self.transport = Transport(self._r)
        self.registry = Registry(self._r)
        self.ledger = Ledger(self._r)
        self.summaries = Summaries(self._r)

    @classmethod
    def from_settings(cls, settings: Settings) -> ResultStore:
        s = settings
        return cls(s.redis_url, keep_runs=s.keep_runs, redis_ca=s.redis_ca, archive_dir=s.archive_dir)

    def ping(self) -> None:
        self._r.ping()

    def retrying(self, fn: Callable[[], T], timeout_s: float = 300.0) -> T:
        """Run fn, retrying while Redis is unreachable (a restart) or out of memory, for up to
        timeout_s (fleet.retrying)."""
        return retry_redis(fn, timeout_s)

    # -- runs -------------------------------------------------------------------------
    def create_run(self, meta: dict[str, Any], jobs: list[Job], encoded: Mapping[str, str] | None = None) -> None:
        """All of the run or none of it (one MULTI/EXEC; removed again when it fails midway).
        encoded: job id -> the job as JSON, when the caller has it already (a submit does)."""
        run_id = meta["run_id"]
        pipe = self._r.pipeline(transaction=True)
        pipe.set(keys.run(run_id, "meta"), json.dumps(meta))
        texts = encoded if encoded is not None else {j["job_id"]: stored_text(dict(j)) for j in jobs}
        pipe.hset(keys.run(run_id, "jobs"), mapping={j["job_id"]: texts[j["job_id"]] for j in jobs})
        pipe.zadd(keys.RUNS, {run_id: meta["started_at"]})
        try:
            pipe.execute()
        except (RedisOutOfMemory, StoreCorrupt, redis.ResponseError):
            with contextlib.suppress(StoreCorrupt):  # fleet:runs of another type: the run's own keys still go
                self.delete_run(run_id)
            raise
        self.prune()

    def delete_run(self, run_id: str) -> None:
        """Every key of the run and its place in the list of runs (deleting frees memory: allowed
        even when Redis is out of memory)."""
        self._r.delete(*(keys.run(run_id, s) for s in keys.RUN_PARTS))
        self._r.zrem(keys.RUNS, run_id)

    def prune(self) -> None:
        """Keep the newest keep_runs runs (retention). A run older than those is deleted only
        once it is over (marked finished, or past its deadline): never under a running job; and,
        with an archive folder, only once its results are archived there (fleet.archive): a run
        whose file cannot be written stays in Redis."""
        said = False  # an archive that cannot be written is said once a prune, not once a run
        for run_id in self._r.zrange(keys.RUNS, 0, -self.keep_runs - 1):
            try:
                meta = self.meta(run_id)
                over = self.is_finished(run_id) or meta["deadline"] <= time.time()
            except RunNotFound:  # listed without its meta: nothing there to spare
                meta, over = None, True
            if over and meta is not None and self.archive_dir is not None:
                try:
                    archive.write_run(self.archive_dir, meta, self.results(run_id), self.job_count(run_id))
                except OSError as exc:  # kept in Redis: tried again at the next prune, and said
                    # (silently, Redis would grow past keep_runs run after run, the operator unaware)
                    if not said:
                        logger.warning(
                            "run %s cannot be archived in %s (%s): it stays in Redis, past FLEET_KEEP_RUNS, "
                            "until the archive can be written",
                            run_id,
                            self.archive_dir,
                            exc.strerror or exc,
                        )
                        said = True
                    continue
                except StoreCorrupt as exc:  # e.g. a run id that is no file name: kept in Redis, said
                    logger.warning("%s; the run stays in Redis (ZREM %s and DEL its keys to drop it)", exc, keys.RUNS)
                    continue
            if over:
                self.delete_run(run_id)

    def run_ids(self, limit: int = 20) -> list[str]:
        """Newest first."""
        return list(self._r.zrevrange(keys.RUNS, 0, limit - 1))

    def resolve_run_id(self, run_id: str | None) -> str:
        if run_id is None:
            ids = self.run_ids(1)
            if not ids:
                raise RunNotFound(f"no runs in Redis at {redact_url(self.url)}")
            return ids[0]
        if self._r.zscore(keys.RUNS, run_id) is None:
            raise RunNotFound(f"no run with id {run_id!r} in Redis at {redact_url(self.url)}")
        return run_id

    def previous_run_id(self, run_id: str) -> str | None:
        rank = self._r.zrank(keys.RUNS, run_id)
        if not rank:
            return None
        ids = self._r.zrange(keys.RUNS, rank - 1, rank - 1)
        return ids[0] if ids else None

    def meta(self, run_id: str) -> dict[str, Any]:
        """The run's meta (fleet.records.decode_meta: a corrupt one is a marker, never an error)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(keys.run(run_id, "meta"))
        pipe.get(keys.run(run_id, "finished"))
        pipe.zscore(keys.RUNS, run_id)
        raw, finished, listed = pipe.execute(raise_on_error=False)  # another type: StoreCorrupt in place
        if isinstance(listed, StoreCorrupt):
            raise listed
        if raw is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        meta = records.decode_meta(raw, run_id, listed)
        finished_at = records.decode_time(finished)  # a time it cannot show (1e999, not text): over at its deadline
        meta["finished_at"] = None if finished is None else finished_at if finished_at is not None else meta["deadline"]
        return meta

    def jobs(self, run_id: str) -> dict[str, Job]:
        try:
            raw = self._r.hgetall(keys.run(run_id, "jobs"))
        except StoreCorrupt as exc:
            return {JOBS_KEY: records.decode_job(exc, run_id, JOBS_KEY)}
        return {k: records.decode_job(v, run_id, k) for k, v in raw.items()}

    def stored_job(self, run_id: str, job_id: str) -> Any:
        """The job the run stored under job_id, decoded as it is (not checked), or None when the
        run has no such job or its text is not JSON."""
        try:
            raw = self._r.hget(keys.run(run_id, "jobs"), job_id)
        except StoreCorrupt:
            return None
        return None if raw is None else records.decode_object(raw)

    def job_ids(self, run_id: str) -> set[str] | None:
        """The run's job ids (nothing decoded), or None when its jobs key holds another type."""
        try:
            return set(self._r.hkeys(keys.run(run_id, "jobs")))
        except StoreCorrupt:
            return None

    def job_count(self, run_id: str) -> int:
        try:
            return int(self._r.hlen(keys.run(run_id, "jobs")))
        except StoreCorrupt:  # unknown: the jobs with a result, and the placeholder row of the hash
            return self.result_count(run_id) + 1

    # -- results ----------------------------------------------------------------------
    def begin_attempt(self, run_id: str, job_id: str, counter: str | None = None) -> tuple[bool, int]:
        """One round trip: whether the job already has a result, and its delivery count
        (this delivery included). counter: the field counted (default job_id; a rerun counts apart).
        Raises UnknownJob (nothing counted) for a job id that is not one of the run's jobs."""
        done, count, _ = self.begin_delivery(run_id, job_id, counter)
        return done, count

    def begin_delivery(
        self,
        run_id: str,
        job_id: str,
        counter: str | None = None,
        taken_by: Taker | None = None,
        claimed: Mapping[str, Any] | None = None,
    ) -> tuple[bool, int, bool]:
        """begin_attempt, and with taken_by, the ledger's record that this worker took the job
        (Ledger.started) when this is the first delivery of a job without a result, in the same
        round trip (fleet/store/begin.lua). Returns (done, count, taken: whether the script made
        the ledger's writes here, so that the caller must not make them again). A ledger key of
        another type is logged, never raised: the writes before and after it still land, so the
        delivery is taken all the same (writing them again would count it twice).
        With taken_by, the delivery also takes the job's lease (fleet.store.ledger), unless
        another live process holds it: then the delivery is a duplicate, counted as such and
        logged here, and (True, count, True) comes back: nothing to run, nothing to record.
        claimed: the message's job (a worker's delivery): unless it is the job the run stored
        (fleet.jobs.stored_text), NotTheRunsJob is raised and nothing is counted or written."""
        script_keys = [keys.run(run_id, k) for k in ("results", "attempts", "jobs")]
        args = [job_id, counter or job_id, "0"]
        if taken_by is not None:
            ledger_keys, ledger_args = started_script(run_id, job_id, counter or job_id, taken_by)
            script_keys, args = script_keys + ledger_keys, [*args[:2], "1", *ledger_args]
        try:  # encoded as the run stored its jobs: an honest message's text is the same
            args.append("" if claimed is None else stored_text(dict(claimed)))
        except (TypeError, ValueError) as exc:  # a kombu-typed value (Decimal, datetime...)
            raise NotTheRunsJob(run_id, job_id, f"it holds a value JSON cannot carry ({exc})") from None
        done, count, known, ours, ledger, *holder = self._script(_BEGIN, script_keys, args)
        if isinstance(ours, str):  # the message's job is not the one the run stored
            stored = self.stored_job(run_id, job_id)
            raise NotTheRunsJob(run_id, job_id, differing_fields(stored, dict(claimed or {})))
        if not known or not ours:  # the run is gone (withdrawn, pruned), or never had this job
            if known:
                raise UnknownJob(run_id, job_id)
            return True, int(count), False  # nothing to run, no key left behind
        if holder:
            logger.warning("%s of %s is running in %s: a duplicate delivery, not run", job_id, run_id, holder[0])
            return True, int(count), True
        if ledger not in (0, 1):
            logger.warning("could not write the ledger: %s", ledger)
        return bool(done), int(count), ledger != 0

    def put_result(
        self,
        result: Result,
        only_if_absent: bool = False,
        sealed: tuple[str, ...] = SEALED,
        finished_by: Taker | None = None,
    ) -> bool:
        """Write one job's result in one round trip, unless the run is finished or the job
        already holds a result whose status is in `sealed` (those results are appended to the
        run's late attempts instead). only_if_absent: never replace an existing result.
        Marks the run finished when it was the last. Returns whether it was written.
        finished_by: the ledger's count of a stored outcome (Ledger.finished) goes in the same
        script, whatever became of the result; a ledger key of another type is logged.
        Raises UnknownJob (nothing written) for a job id that is not one of the run's jobs."""
        run_id, job_id = result["run_id"], result["job_id"]
        script_keys = [keys.run(run_id, k) for k in ("results", "jobs", "finished", "late")]
        ledger_args = ["", "", ""]
        if finished_by is not None:
            ledger_keys, ledger_args = finished_script(run_id, job_id, finished_by)
            script_keys += ledger_keys
        only = "1" if only_if_absent else "0"
        args = [job_id, json.dumps(result), only, str(now()), *ledger_args, *sealed]
        written, ledger = self._script(_PUT_RESULT, script_keys, args)
        if ledger != 0:
            logger.warning("could not write the ledger: %s", ledger)
        if int(written) < 0:
            raise UnknownJob(run_id, job_id)
        return bool(written)

    def _script(self, script: _Script, script_keys: list[str], args: list[str]) -> Any:
        """Run a Lua script by its digest (its text sent only to a Redis that has not seen it)."""
        try:
            return self._r.evalsha(script.sha, len(script_keys), *script_keys, *args)
        except redis.exceptions.NoScriptError:  # a Redis that has not seen it yet (or restarted)
            return self._r.eval(script.text, len(script_keys), *script_keys, *args)

    def attempts(self, run_id: str) -> dict[str, int]:
        """Deliveries counted per job (per rerun counter) so far."""
        try:
            raw = self._r.hgetall(keys.run(run_id, "attempts"))
        except StoreCorrupt:
            return {}
        return {k: int(v) for k, v in raw.items() if v.isdigit()}

    def result_count(self, run_id: str) -> int:
        """How many jobs have a result (one round trip, nothing decoded)."""
        try:
            return int(self._r.hlen(keys.run(run_id, "results")))
        except StoreCorrupt:
            return len(self.results(run_id))

    def write_results(self, run_id: str, results: Sequence[Mapping[str, Any]]) -> None:
        """Store these results as they are, in one round trip, without put_result's checks
        (no sealing, no finishing): for fixtures, such as bench.render's."""
        pipe = self._r.pipeline()
        for r in results:
            pipe.hset(keys.run(run_id, "results"), r["job_id"], json.dumps(r))
        pipe.execute()

    def late_results(self, run_id: str) -> list[Result]:
        """Results that arrived after the run was finished or the job's result was sealed."""
        try:
            raw = self._r.lrange(keys.run(run_id, "late"), 0, -1)
        except StoreCorrupt as exc:
            return [records.decode_late(exc, run_id, 0)]
        return [records.decode_late(v, run_id, i) for i, v in enumerate(raw)]

    # -- reruns (a FAILED job run again before its result is written) --------------------
    def add_rerun(self, run_id: str, job_id: str, rerun: int, record: dict[str, Any]) -> bool:
        """Keep the outcome of run number `rerun` of a job; False when it was already kept
        (a redelivery of a message whose outcome is known)."""
        return bool(self._r.hsetnx(keys.run(run_id, "reruns"), f"{job_id}#{rerun}", json.dumps(record)))

    def reruns(self, run_id: str, job_id: str) -> list[dict[str, Any]]:
        """The outcomes kept for a job, in rerun order."""
        try:
            raw = self._r.hgetall(keys.run(run_id, "reruns"))
        except StoreCorrupt:
            return []  # none kept that can be read
        mine = {}
        for k, v in raw.items():
            head, _, n = k.rpartition("#")
            if head == job_id and n.isdigit():
                mine[int(n)] = records.decode_rerun(v, run_id, job_id, int(n))
        return [mine[i] for i in sorted(mine)]

    # -- reading across runs (baselines, history, trends) -------------------------------
    def runs_oldest_first(self) -> list[tuple[str, float]]:
        """Every listed run with its start time, oldest first."""
        rows = self._r.zrange(keys.RUNS, 0, -1, withscores=True)
        return [(str(rid), records.decode_time(ts) or 0.0) for rid, ts in rows]

    def runs_before(self, run_id: str, limit: int) -> list[tuple[str, float]]:
        """Up to `limit` runs older than run_id with their start times, newest first."""
        score = self._r.zscore(keys.RUNS, run_id)
        if score is None:
            return []
        rows = self._r.zrevrangebyscore(keys.RUNS, f"({score}", "-inf", start=0, num=limit, withscores=True)
        return [(str(rid), records.decode_time(ts) or 0.0) for rid, ts in rows]

    def results_of(self, run_ids: list[str], job_ids: list[str]) -> dict[str, dict[str, Result]]:
        """For each run, its results for these jobs (one round trip)."""
        if not run_ids or not job_ids:
            return {rid: {} for rid in run_ids}
        pipe = self._r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hmget(keys.run(rid, "results"), job_ids)
        out: dict[str, dict[str, Result]] = {}
        for rid, values in zip(run_ids, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(values, StoreCorrupt):  # that run's results hash is of another type: none there
                out[rid] = {}
                continue
            out[rid] = {
                jid: records.decode_result(v, rid, jid) for jid, v in zip(job_ids, values, strict=True) if v is not None
            }
        return out

    def job_specs(self, run_id: str, job_ids: list[str]) -> dict[str, Job]:
        try:
            values = self._r.hmget(keys.run(run_id, "jobs"), job_ids) if job_ids else []
        except StoreCorrupt:
            return {}
        specs = {jid: records.decode_job(v, run_id, jid) for jid, v in zip(job_ids, values, strict=True) if v}
        return {jid: job for jid, job in specs.items() if not records.is_corrupt(job)}

    def results(self, run_id: str) -> list[Result]:
        """Every result of the run; a corrupt one is a FAILED corrupt_record marker (fleet.records)."""
        try:
            raw = self._r.hgetall(keys.run(run_id, "results"))
        except StoreCorrupt as exc:
            return [records.decode_result(exc, run_id, RESULTS_KEY)]
        return [records.decode_result(v, run_id, k) for k, v in sorted(raw.items())]

    def progress(self, run_id: str) -> tuple[int, int, Counter[str]]:
        results = self.results(run_id)
        return len(results), self.job_count(run_id), Counter(str(r["status"]) for r in results)

    def is_finished(self, run_id: str) -> bool:
        return bool(self._r.exists(keys.run(run_id, "finished")))

    def mark_finished(self, run_id: str) -> None:
        self._r.set(keys.run(run_id, "finished"), now(), nx=True)

    def unfinished_run_ids(self) -> list[str]:
        ids = self.run_ids(self.keep_runs)
        pipe = self._r.pipeline(transaction=False)
        for run_id in ids:
            pipe.exists(keys.run(run_id, "finished"))
        return [run_id for run_id, done in zip(ids, pipe.execute(), strict=True) if not done]
