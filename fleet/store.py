"""The Redis result store: runs, jobs, results, attempt counts and worker heartbeats.

Redis I/O only: what a result means (LOST, SKIPPED, when a run is over) is decided by
orchestrator.runs. Each job writes its own result into a per-run hash keyed by job id
("family@device"), so a repeated delivery overwrites instead of adding a row. Completion is
counted here (HLEN), not with Celery chords. Every redis-py error becomes RedisUnreachable in
one place: the _Translating client.
"""

from __future__ import annotations

import json
import time
import types
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis

from fleet import records
from fleet.errors import RedisOutOfMemory, RedisUnreachable, RunNotFound
from fleet.protocol import SEALED, Job, Result, now
from fleet.retrying import retry_redis, says_out_of_memory
from fleet.settings import Settings, redact_url

T = TypeVar("T")
PREFIX = "fleet"
WORKER_TTL_S = 30
RUN_KEYS = ("meta", "jobs", "results", "attempts", "finished", "report", "late", "reruns")
HELD_KEY = "fleet:held"  # delivery tag -> instance id of the worker process that received it
UNACKED_KEY, UNACKED_INDEX_KEY = "unacked", "unacked_index"  # kombu's Redis transport

# Write a result unless the run is finished or the job's result is sealed (a status in ARGV[4..]):
# then it is kept as a late attempt for the record. Marks the run finished when it was the last.
# One script, so that a late result and the finalisation cannot interleave.
_PUT_RESULT = """
local results, jobs, finished, late = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, value, only_if_absent, now = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
if redis.call('EXISTS', jobs) == 0 then
  return 0  -- the run is gone (pruned): write nothing that nobody would clean up
end
if redis.call('EXISTS', finished) == 1 then
  redis.call('RPUSH', late, value)
  return 0
end
local previous = redis.call('HGET', results, job_id)
if previous then
  if only_if_absent then return 0 end
  local ok, decoded = pcall(cjson.decode, previous)  -- a corrupt record is replaced, never fatal
  local status = nil
  if ok and type(decoded) == 'table' then status = decoded['status'] end
  for i = 5, #ARGV do
    if status == ARGV[i] then
      redis.call('RPUSH', late, value)
      return 0
    end
  end
end
redis.call('HSET', results, job_id, value)
if redis.call('HLEN', results) >= redis.call('HLEN', jobs) then
  redis.call('SET', finished, now, 'NX')
end
return 1
"""


def new_run_id() -> str:
    """Sortable and unique: UTC time, then a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class _Translating:
    """A redis-py client (or pipeline) whose errors come out as RedisUnreachable."""

    def __init__(self, target: Any, url: str) -> None:
        self._target = target
        self._url = url

    def _translate(self, exc: redis.RedisError) -> RedisUnreachable:
        where = redact_url(self._url)
        if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            return RedisUnreachable(f"Redis at {where} refused the credentials: {exc}")
        return RedisUnreachable(f"cannot reach Redis at {where}: {exc}")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                value = attr(*args, **kwargs)
                if isinstance(value, types.GeneratorType):
                    value = list(value)  # scan_iter: errors surface while iterating
            except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
                raise self._translate(exc) from None
            except redis.ResponseError as exc:
                if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                    raise self._translate(exc) from None
                if isinstance(exc, redis.exceptions.OutOfMemoryError) or says_out_of_memory(exc):
                    raise RedisOutOfMemory(f"Redis is out of memory at {redact_url(self._url)}: {exc}") from None
                raise
            if isinstance(value, redis.client.Pipeline):
                return _Translating(value, self._url)
            return value

        return call


class ResultStore:
    def __init__(self, url: str, keep_runs: int = 200, redis_ca: str | None = None) -> None:
        self.url = url
        self.keep_runs = keep_runs  # retention: the newest keep_runs runs are kept
        tls: dict[str, Any] = {}
        if url.startswith("rediss://") and redis_ca:
            tls["ssl_ca_certs"] = redis_ca
        try:
            client = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=3,
                socket_timeout=10,
                health_check_interval=15,
                **tls,
            )
        except ValueError as exc:
            raise RedisUnreachable(f"bad Redis URL {redact_url(url)}: {exc}") from None
        # redis-py's stubs do not follow decode_responses=True (every reply is str here).
        self.r: Any = _Translating(client, url)

    @classmethod
    def from_settings(cls, settings: Settings) -> ResultStore:
        return cls(settings.redis_url, keep_runs=settings.keep_runs, redis_ca=settings.redis_ca)

    def ping(self) -> None:
        self.r.ping()

    def retrying(self, fn: Callable[[], T], timeout_s: float = 300.0) -> T:
        """Run fn, retrying while Redis is unreachable (a restart) or out of memory, for up to
        timeout_s (fleet.retrying)."""
        return retry_redis(fn, timeout_s)

    # -- keys -------------------------------------------------------------------------
    @staticmethod
    def _k(*parts: str) -> str:
        return ":".join((PREFIX, *parts))

    # -- runs -------------------------------------------------------------------------
    def create_run(self, meta: dict[str, Any], jobs: list[Job]) -> None:
        """All of the run or none of it (one MULTI/EXEC; removed again when it fails midway)."""
        run_id = meta["run_id"]
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self._k("run", run_id, "meta"), json.dumps(meta))
        pipe.hset(self._k("run", run_id, "jobs"), mapping={j["job_id"]: json.dumps(j) for j in jobs})
        pipe.zadd(self._k("runs"), {run_id: meta["started_at"]})
        try:
            pipe.execute()
        except (RedisOutOfMemory, redis.ResponseError):
            self.delete_run(run_id)
            raise
        self.prune()

    # -- records and retention (hostile input: fleet/records.py) -------------------------
    def delete_run(self, run_id: str) -> None:
        """Every key of the run and its place in the list of runs (deleting frees memory: allowed
        even when Redis is out of memory)."""
        self.r.delete(*(self._k("run", run_id, s) for s in RUN_KEYS))
        self.r.zrem(self._k("runs"), run_id)

    def prune(self) -> None:
        """Keep the newest keep_runs runs (retention). A run older than those is deleted only
        once it is over (marked finished, or past its deadline): never under a running job."""
        for run_id in self.r.zrange(self._k("runs"), 0, -self.keep_runs - 1):
            try:
                over = self.is_finished(run_id) or self.meta(run_id)["deadline"] <= time.time()
            except RunNotFound:  # listed without its meta: nothing there to spare
                over = True
            if over:
                self.delete_run(run_id)

    def run_ids(self, limit: int = 20) -> list[str]:
        """Newest first."""
        return list(self.r.zrevrange(self._k("runs"), 0, limit - 1))

    def resolve_run_id(self, run_id: str | None) -> str:
        if run_id is None:
            ids = self.run_ids(1)
            if not ids:
                raise RunNotFound(f"no runs in Redis at {redact_url(self.url)}")
            return ids[0]
        if self.r.zscore(self._k("runs"), run_id) is None:
            raise RunNotFound(f"no run with id {run_id!r} in Redis at {redact_url(self.url)}")
        return run_id

    def previous_run_id(self, run_id: str) -> str | None:
        rank = self.r.zrank(self._k("runs"), run_id)
        if not rank:
            return None
        ids = self.r.zrange(self._k("runs"), rank - 1, rank - 1)
        return ids[0] if ids else None

    def meta(self, run_id: str) -> dict[str, Any]:
        """The run's meta (fleet.records.decode_meta: a corrupt one is a marker, never an error)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self._k("run", run_id, "meta"))
        pipe.get(self._k("run", run_id, "finished"))
        pipe.zscore(self._k("runs"), run_id)
        raw, finished, listed = pipe.execute()
        if raw is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        meta = records.decode_meta(raw, run_id, listed)
        try:
            meta["finished_at"] = float(finished) if finished else None
        except ValueError:
            meta["finished_at"] = meta["deadline"]
        return meta

    def jobs(self, run_id: str) -> dict[str, Job]:
        raw = self.r.hgetall(self._k("run", run_id, "jobs"))
        return {k: records.decode_job(v, run_id, k) for k, v in raw.items()}

    def job_count(self, run_id: str) -> int:
        return int(self.r.hlen(self._k("run", run_id, "jobs")))

    # -- results ----------------------------------------------------------------------
    def begin_attempt(self, run_id: str, job_id: str, counter: str | None = None) -> tuple[bool, int]:
        """Whether the job already has a result (True too when the run no longer exists), and its delivery count
        (this delivery included). counter: the field counted (default job_id; a rerun counts apart)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hexists(self._k("run", run_id, "results"), job_id)
        pipe.hincrby(self._k("run", run_id, "attempts"), counter or job_id, 1)
        pipe.exists(self._k("run", run_id, "jobs"))
        done, count, known = pipe.execute()
        if not known:  # the run is gone (withdrawn, pruned): nothing to run, no key left behind
            self.r.hdel(self._k("run", run_id, "attempts"), counter or job_id)
            return True, int(count)
        return bool(done), int(count)

    def put_result(self, result: Result, only_if_absent: bool = False, sealed: tuple[str, ...] = SEALED) -> bool:
        """Write one job's result in one round trip, unless the run is finished or the job
        already holds a result whose status is in `sealed` (those results are appended to the
        run's late attempts instead). only_if_absent: never replace an existing result.
        Marks the run finished when it was the last. Returns whether it was written."""
        run_id, job_id = result["run_id"], result["job_id"]
        keys = [self._k("run", run_id, k) for k in ("results", "jobs", "finished", "late")]
        args = [job_id, json.dumps(result), "1" if only_if_absent else "0", str(now()), *sealed]
        return bool(self.r.eval(_PUT_RESULT, len(keys), *keys, *args))

    def late_results(self, run_id: str) -> list[Result]:
        """Results that arrived after the run was finished or the job's result was sealed."""
        raw = self.r.lrange(self._k("run", run_id, "late"), 0, -1)
        return [records.decode_late(v, run_id, i) for i, v in enumerate(raw)]

    # -- reruns (a FAILED job run again before its result is written) --------------------
    def add_rerun(self, run_id: str, job_id: str, rerun: int, record: dict[str, Any]) -> bool:
        """Keep the outcome of run number `rerun` of a job; False when it was already kept
        (a redelivery of a message whose outcome is known)."""
        return bool(self.r.hsetnx(self._k("run", run_id, "reruns"), f"{job_id}#{rerun}", json.dumps(record)))

    def reruns(self, run_id: str, job_id: str) -> list[dict[str, Any]]:
        """The outcomes kept for a job, in rerun order."""
        raw = self.r.hgetall(self._k("run", run_id, "reruns"))
        mine = {}
        for k, v in raw.items():
            head, _, n = k.rpartition("#")
            if head == job_id and n.isdigit():
                mine[int(n)] = records.decode_rerun(v, run_id, job_id, int(n))
        return [mine[i] for i in sorted(mine)]

    # -- reading across runs (baselines, history, trends) -------------------------------
    def runs_before(self, run_id: str, limit: int) -> list[tuple[str, float]]:
        """Up to `limit` runs older than run_id with their start times, newest first."""
        score = self.r.zscore(self._k("runs"), run_id)
        if score is None:
            return []
        rows = self.r.zrevrangebyscore(self._k("runs"), f"({score}", "-inf", start=0, num=limit, withscores=True)
        return [(str(rid), float(ts)) for rid, ts in rows]

    def results_of(self, run_ids: list[str], job_ids: list[str]) -> dict[str, dict[str, Result]]:
        """For each run, its results for these jobs (one round trip)."""
        if not run_ids or not job_ids:
            return {rid: {} for rid in run_ids}
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hmget(self._k("run", rid, "results"), job_ids)
        out: dict[str, dict[str, Result]] = {}
        for rid, values in zip(run_ids, pipe.execute(), strict=True):
            out[rid] = {
                jid: records.decode_result(v, rid, jid) for jid, v in zip(job_ids, values, strict=True) if v is not None
            }
        return out

    def job_specs(self, run_id: str, job_ids: list[str]) -> dict[str, Job]:
        values = self.r.hmget(self._k("run", run_id, "jobs"), job_ids) if job_ids else []
        specs = {jid: records.decode_job(v, run_id, jid) for jid, v in zip(job_ids, values, strict=True) if v}
        return {jid: job for jid, job in specs.items() if not records.is_corrupt(job)}

    def results(self, run_id: str) -> list[Result]:
        """Every result of the run; a corrupt one is a FAILED corrupt_record marker (fleet.records)."""
        raw = self.r.hgetall(self._k("run", run_id, "results"))
        return [records.decode_result(v, run_id, k) for k, v in sorted(raw.items())]

    def progress(self, run_id: str) -> tuple[int, int, Counter[str]]:
        results = self.results(run_id)
        return len(results), self.job_count(run_id), Counter(str(r["status"]) for r in results)

    def is_finished(self, run_id: str) -> bool:
        return bool(self.r.exists(self._k("run", run_id, "finished")))

    def mark_finished(self, run_id: str) -> None:
        self.r.set(self._k("run", run_id, "finished"), now(), nx=True)

    def queue_length(self, queue: str) -> int:
        """Messages waiting in a broker queue: kombu's list for the queue and its priority lists."""
        pipe = self.r.pipeline(transaction=False)
        for key in [queue] + [f"{queue}\x06\x16{p}" for p in (3, 6, 9)]:
            pipe.llen(key)
        return int(sum(pipe.execute()))

    # -- reports ----------------------------------------------------------------------
    def save_report(self, run_id: str, markdown: str) -> None:
        self.r.set(self._k("run", run_id, "report"), markdown)

    def saved_report(self, run_id: str) -> str | None:
        value = self.r.get(self._k("run", run_id, "report"))
        return str(value) if value is not None else None

    # -- workers ----------------------------------------------------------------------
    def heartbeat(self, name: str, info: dict[str, Any], ttl: int = WORKER_TTL_S) -> None:
        self.r.set(self._k("worker", name), json.dumps({**info, "seen_at": now()}), ex=ttl)

    def forget_worker(self, name: str) -> None:
        self.r.delete(self._k("worker", name))

    def live_workers(self) -> list[dict[str, Any]]:
        keys = sorted(self.r.scan_iter(self._k("worker", "*")))
        values = self.r.mget(keys) if keys else []
        return [w for w in (records.decode_object(v) for v in values if v) if w is not None]

    def served_queues(self) -> set[str]:
        return {q for w in self.live_workers() for q in w.get("queues", [])}

    # -- deliveries: which worker process holds which message ------------------------
    def hold(self, delivery_tag: str, instance: str) -> None:
        self.r.hset(HELD_KEY, delivery_tag, instance)

    def held(self) -> dict[str, str]:
        return dict(self.r.hgetall(HELD_KEY))

    def release(self, *delivery_tags: str) -> None:
        if delivery_tags:
            self.r.hdel(HELD_KEY, *delivery_tags)

    def unacked_since(self, delivery_tags: list[str]) -> dict[str, float]:
        """Those of these delivery tags whose message is still unacknowledged, with the time it
        was delivered (kombu's unacked_index)."""
        pipe = self.r.pipeline(transaction=False)
        for tag in delivery_tags:
            pipe.zscore(UNACKED_INDEX_KEY, tag)
        return {tag: float(t) for tag, t in zip(delivery_tags, pipe.execute(), strict=True) if t is not None}

    def restore_unacked(self, delivery_tag: str) -> bool:
        """Put an unacknowledged message back on its queue now, as kombu's own restore does
        after the visibility timeout (same transaction: it cannot be restored twice)."""
        restored = False

        def move(pipe: Any) -> None:
            nonlocal restored
            raw = pipe.hget(UNACKED_KEY, delivery_tag)
            pipe.multi()
            pipe.zrem(UNACKED_INDEX_KEY, delivery_tag)
            pipe.hdel(UNACKED_KEY, delivery_tag)
            pipe.hdel(HELD_KEY, delivery_tag)
            if raw:
                message, _exchange, routing_key = json.loads(raw)
                message.get("headers", {})["redelivered"] = True
                message.get("properties", {}).get("delivery_info", {})["redelivered"] = True
                pipe.rpush(routing_key, json.dumps(message))  # consumers BRPOP: the front of the queue
                restored = True

        self.r.transaction(move, UNACKED_KEY)
        return restored

    # -- queues -----------------------------------------------------------------------
    def queued(self, queue: str) -> list[str]:
        return list(self.r.lrange(queue, 0, -1))

    def drop_queued(self, queue: str, raw_messages: list[str]) -> int:
        """Remove these messages (as returned by queued()) from the queue."""
        pipe = self.r.pipeline(transaction=False)
        for raw in raw_messages:
            pipe.lrem(queue, 1, raw)
        return sum(int(n) for n in pipe.execute())

    def clear_queues(self, queues: tuple[str, ...]) -> None:
        """Every queued and unacknowledged message gone (the embedded run, before its workers start)."""
        self.r.delete(*queues, UNACKED_KEY, UNACKED_INDEX_KEY, HELD_KEY)

    def unfinished_run_ids(self) -> list[str]:
        ids = self.run_ids(self.keep_runs)
        pipe = self.r.pipeline(transaction=False)
        for run_id in ids:
            pipe.exists(self._k("run", run_id, "finished"))
        return [run_id for run_id, done in zip(ids, pipe.execute(), strict=True) if not done]

    # -- schedule ---------------------------------------------------------------------
    def claim_slot(self, slot: str, run_id: str, ttl_s: int = 7 * 86400) -> bool:
        """At most one run per schedule slot, whoever asks (SET NX)."""
        return bool(self.r.set(self._k("slot", slot), run_id, nx=True, ex=ttl_s))

    def slot_run(self, slot: str) -> str | None:
        value = self.r.get(self._k("slot", slot))
        return str(value) if value is not None else None
