"""The Redis result store: runs, jobs, results, attempt counts and worker heartbeats.

Each job writes its own result into a per-run hash keyed by job id ("family@device"), so a
repeated delivery overwrites instead of adding a row. Completion is counted here (HLEN),
not with Celery chords. redis-py errors become RedisUnreachable at one place: _client().
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis

from fleet.errors import ErrorKind, RedisUnreachable, RunNotFound
from fleet.protocol import Status, now, terminal_result
from fleet.settings import redact_url

T = TypeVar("T")
PREFIX = "fleet"
WORKER_TTL_S = 30


def new_run_id() -> str:
    """Sortable and unique: UTC time, then a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@contextmanager
def _redis_errors(url: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnreachable(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    except redis.AuthenticationError as exc:
        raise RedisUnreachable(f"Redis at {redact_url(url)} refused the credentials: {exc}") from None


class ResultStore:
    def __init__(self, url: str, keep_runs: int | None = None) -> None:
        self.url = url
        # Retention: the newest FLEET_KEEP_RUNS runs (default 200) are kept, older ones deleted.
        self.keep_runs = keep_runs or int(os.environ.get("FLEET_KEEP_RUNS", "200"))
        tls: dict[str, Any] = {}
        if url.startswith("rediss://") and os.environ.get("FLEET_REDIS_CA"):
            tls["ssl_ca_certs"] = os.environ["FLEET_REDIS_CA"]
        with _redis_errors(url):
            # redis-py's stubs do not follow decode_responses=True (every reply is str here).
            self.r: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=3,
                socket_timeout=10,
                health_check_interval=15,
                **tls,
            )

    def ping(self) -> None:
        with _redis_errors(self.url):
            self.r.ping()

    def retrying(self, fn: Callable[[], T], timeout_s: float = 300.0) -> T:
        """Run fn, retrying while Redis is unreachable (a restart), for up to timeout_s."""
        deadline = time.monotonic() + timeout_s
        delay = 0.2
        while True:
            try:
                return fn()
            except RedisUnreachable:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- keys -------------------------------------------------------------------------
    @staticmethod
    def _k(*parts: str) -> str:
        return ":".join((PREFIX, *parts))

    # -- runs -------------------------------------------------------------------------
    def create_run(self, meta: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
        run_id = meta["run_id"]
        with _redis_errors(self.url):
            pipe = self.r.pipeline(transaction=True)
            pipe.set(self._k("run", run_id, "meta"), json.dumps(meta))
            pipe.hset(self._k("run", run_id, "jobs"), mapping={j["job_id"]: json.dumps(j) for j in jobs})
            pipe.zadd(self._k("runs"), {run_id: meta["started_at"]})
            pipe.execute()
        self.prune()

    def prune(self) -> None:
        """Keep the newest keep_runs runs (retention)."""
        with _redis_errors(self.url):
            old = self.r.zrange(self._k("runs"), 0, -self.keep_runs - 1)
            for run_id in old:
                self.r.delete(
                    *(self._k("run", run_id, s) for s in ("meta", "jobs", "results", "attempts", "finished", "report"))
                )
                self.r.zrem(self._k("runs"), run_id)

    def run_ids(self, limit: int = 20) -> list[str]:
        """Newest first."""
        with _redis_errors(self.url):
            return list(self.r.zrevrange(self._k("runs"), 0, limit - 1))

    def resolve_run_id(self, run_id: str | None) -> str:
        if run_id is None:
            ids = self.run_ids(1)
            if not ids:
                raise RunNotFound(f"no runs in Redis at {redact_url(self.url)}")
            return ids[0]
        with _redis_errors(self.url):
            if self.r.zscore(self._k("runs"), run_id) is None:
                raise RunNotFound(f"no run with id {run_id!r} in Redis at {redact_url(self.url)}")
        return run_id

    def previous_run_id(self, run_id: str) -> str | None:
        with _redis_errors(self.url):
            rank = self.r.zrank(self._k("runs"), run_id)
            if not rank:
                return None
            ids = self.r.zrange(self._k("runs"), rank - 1, rank - 1)
        return ids[0] if ids else None

    def meta(self, run_id: str) -> dict[str, Any]:
        with _redis_errors(self.url):
            raw = self.r.get(self._k("run", run_id, "meta"))
            finished = self.r.get(self._k("run", run_id, "finished"))
        if raw is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        meta: dict[str, Any] = json.loads(raw)
        meta["finished_at"] = float(finished) if finished else None
        return meta

    def jobs(self, run_id: str) -> dict[str, dict[str, Any]]:
        with _redis_errors(self.url):
            raw = self.r.hgetall(self._k("run", run_id, "jobs"))
        return {k: json.loads(v) for k, v in raw.items()}

    # -- results ----------------------------------------------------------------------
    def begin_attempt(self, run_id: str, job_id: str) -> tuple[bool, int]:
        """One round trip: whether the job already has a result, and its delivery count
        (this delivery included)."""
        with _redis_errors(self.url):
            pipe = self.r.pipeline(transaction=False)
            pipe.hexists(self._k("run", run_id, "results"), job_id)
            pipe.hincrby(self._k("run", run_id, "attempts"), job_id, 1)
            done, count = pipe.execute()
        return bool(done), int(count)

    def put_result(self, result: dict[str, Any], only_if_absent: bool = False) -> bool:
        """Write (overwrite) one job's result; marks the run finished when it was the last.
        One round trip in the common case."""
        run_id, job_id = result["run_id"], result["job_id"]
        key = self._k("run", run_id, "results")
        with _redis_errors(self.url):
            pipe = self.r.pipeline(transaction=False)
            if only_if_absent:
                pipe.hsetnx(key, job_id, json.dumps(result))
            else:
                pipe.hset(key, job_id, json.dumps(result))
            pipe.hlen(key)
            pipe.hlen(self._k("run", run_id, "jobs"))
            written, have, total = pipe.execute()
            if have >= total:
                self.r.set(self._k("run", run_id, "finished"), now(), nx=True)
        return bool(written) or not only_if_absent

    def results(self, run_id: str) -> list[dict[str, Any]]:
        with _redis_errors(self.url):
            raw = self.r.hgetall(self._k("run", run_id, "results"))
        return [json.loads(v) for _, v in sorted(raw.items())]

    def progress(self, run_id: str) -> tuple[int, int, Counter[str]]:
        results = self.results(run_id)
        with _redis_errors(self.url):
            total = int(self.r.hlen(self._k("run", run_id, "jobs")))
        return len(results), total, Counter(r["status"] for r in results)

    def is_finished(self, run_id: str) -> bool:
        with _redis_errors(self.url):
            return bool(self.r.exists(self._k("run", run_id, "finished")))

    def finalize_if_due(self, run_id: str) -> bool:
        """Past the deadline, every job without a result becomes LOST, or SKIPPED when no
        live worker serves its device. Returns whether the run is finished."""
        if self.is_finished(run_id):
            return True
        meta = self.meta(run_id)
        if time.time() < meta["deadline"]:
            return False
        self.skip_unserved(run_id, {q for w in self.live_workers() for q in w.get("queues", [])})
        have = {r["job_id"] for r in self.results(run_id)}
        for jid, job in self.jobs(run_id).items():
            if jid not in have:
                lost = terminal_result(
                    job,
                    Status.LOST,
                    ErrorKind.WORKER_LOST,
                    f"no result before the run deadline ({meta['deadline_s']:.0f} s)",
                )
                self.put_result(lost, only_if_absent=True)
        with _redis_errors(self.url):
            self.r.set(self._k("run", run_id, "finished"), now(), nx=True)
        return True

    def skip_unserved(self, run_id: str, served_queues: set[str]) -> int:
        """Jobs whose queue no worker serves end SKIPPED (no_worker). Called at the deadline, or
        at once by the embedded run, which knows every worker there will be."""
        have = {r["job_id"] for r in self.results(run_id)}
        skipped = 0
        for jid, job in self.jobs(run_id).items():
            if jid not in have and job["queue"] not in served_queues:
                msg = f"no live worker serves queue {job['queue']!r} (device {job['device']})"
                skipped += self.put_result(
                    terminal_result(job, Status.SKIPPED, ErrorKind.NO_WORKER, msg), only_if_absent=True
                )
        return skipped

    # -- reports ----------------------------------------------------------------------
    def save_report(self, run_id: str, markdown: str) -> None:
        with _redis_errors(self.url):
            self.r.set(self._k("run", run_id, "report"), markdown)

    def saved_report(self, run_id: str) -> str | None:
        with _redis_errors(self.url):
            value = self.r.get(self._k("run", run_id, "report"))
        return str(value) if value is not None else None

    # -- workers ----------------------------------------------------------------------
    def heartbeat(self, name: str, info: dict[str, Any], ttl: int = WORKER_TTL_S) -> None:
        with _redis_errors(self.url):
            self.r.set(self._k("worker", name), json.dumps({**info, "seen_at": now()}), ex=ttl)

    def forget_worker(self, name: str) -> None:
        with _redis_errors(self.url):
            self.r.delete(self._k("worker", name))

    def live_workers(self) -> list[dict[str, Any]]:
        with _redis_errors(self.url):
            keys = sorted(self.r.scan_iter(self._k("worker", "*")))
            values = self.r.mget(keys) if keys else []
        return [json.loads(v) for v in values if v]

    # -- schedule ---------------------------------------------------------------------
    def claim_slot(self, slot: str, run_id: str, ttl_s: int = 7 * 86400) -> bool:
        """At most one run per schedule slot, whoever asks (SET NX)."""
        with _redis_errors(self.url):
            return bool(self.r.set(self._k("slot", slot), run_id, nx=True, ex=ttl_s))

    def slot_run(self, slot: str) -> str | None:
        with _redis_errors(self.url):
            value = self.r.get(self._k("slot", slot))
        return str(value) if value is not None else None
