"""Who took which job, and what became of it: the worker side of a run's accounting.

Workers write it when a job starts (with the delivery count, in fleet/store/begin.lua) and when it
ends (with the result, in put_result.lua): no round trip of its own for a job's first delivery:

- per run, `holders` (job id -> the worker running or last running it) and `ledger`
  ("<worker>\\t<received|finished|died>" -> count): the run's report names a worker that took
  jobs and answered none (a black hole), and a job lost while a worker held it;
- per worker, `fleet:worker_stats:<name>` (received, finished, died, last_received_at,
  last_result_at) across runs, for `orchestrator workers`; it expires STATS_TTL_S after the
  worker's last job;
- per queue, `fleet:running:<queue>`: one token per job running now ("<instance>|<run>|<job>"),
  a list so that KEDA's Redis scaler counts it (LLEN) beside the queue itself
  (docker/k8s/keda-scaledobject.yaml). A token whose worker start is gone or whose job has a
  result is pruned by every live worker's heartbeat loop (prune_running).

A delivery of a job that a worker already held (delivery > 1, no result) means the earlier
delivery died with its process: it is counted against the worker that held it. Unless that
process is alive: a job's lease (`fleet:lease:<run>:<delivery counter>`, the owner
"<instance>:<pid>" of the pool process running it, with a TTL: Redis's clock, not the hosts')
says who runs a job now. The process that
takes a job takes its lease (fleet/store/begin.lua, atomically with the check); the worker's main
process renews it every LEASE_RENEW_S while the job runs, and releases it when the pool process
dies under it (before Celery requeues the message). A delivery that finds the lease of another
owner unexpired is a duplicate (a copy of the message, a redelivery of a running job): it runs
nothing, is not counted as a delivery, and counts as `duplicate` for the worker that got it.
A dead worker's lease expires LEASE_S after its last renewal, long before any redelivery of its
messages (fleet.redelivery: a minute; the visibility timeout: REDELIVERY_MARGIN_S past the
longest hard limit).

Redis I/O only; what the figures mean is orchestrator/accounting.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fleet import records
from fleet.errors import StoreCorrupt
from fleet.protocol import now
from fleet.store import keys

STATS_TTL_S = 30 * 86400
COUNTERS = ("received", "finished", "died")
DUPLICATE = "duplicate"  # deliveries of a job another live process was running: in a worker's counts when any
LEASE_S = 5.0  # a running job's lease lives this long past its last renewal
LEASE_RENEW_S = 1.0  # how often a worker's main process renews the leases of the jobs it runs
SEP = "\t"  # between a worker's name and its counter in a run's ledger hash


def token(instance: str, run_id: str, job_id: str) -> str:
    return f"{instance}|{run_id}|{job_id}"


# A running delivery's (job id, delivery tag, kombu's unacked entry: [payload, exchange, routing key]).
Unacked = tuple[str, str, str]


@dataclass(frozen=True)
class Taker:
    """Who runs a job: the queue it came from, the worker's name, this worker start, and the
    process in it (pid) that runs the job."""

    queue: str
    worker: str
    instance: str
    pid: int = 0

    @property
    def owner(self) -> str:
        """The holder of a job's lease: one process of one worker start."""
        return lease_owner(self.instance, self.pid)


def lease_owner(instance: str, pid: int | None) -> str:
    return f"{instance}:{pid}"


def started_keys(run_id: str, queue: str, worker: str) -> list[str]:
    """holders, ledger, worker stats, running: the keys a worker taking a job writes."""
    return [keys.run(run_id, "holders"), keys.run(run_id, "ledger"), keys.worker_stats(worker), keys.running(queue)]


def started_script(run_id: str, job_id: str, counter: str, by: Taker) -> tuple[list[str], list[str]]:
    """The keys and arguments of Ledger.started's writes, and of taking the job's lease, for
    fleet.store.begin.lua."""
    args = [by.worker, f"{by.worker}{SEP}received", str(now()), str(STATS_TTL_S), token(by.instance, run_id, job_id)]
    lease = [by.owner, str(int(LEASE_S * 1000)), f"{by.worker}{SEP}{DUPLICATE}"]
    return [*started_keys(run_id, by.queue, by.worker), keys.lease(run_id, counter)], args + lease


def finished_script(run_id: str, job_id: str, by: Taker) -> tuple[list[str], list[str]]:
    """The keys and arguments of count_finished's writes for fleet/store/put_result.lua (the
    ledger's count rides with the result: one command, in the same round trip)."""
    stats_keys = [keys.run(run_id, "ledger"), keys.worker_stats(by.worker), keys.running(by.queue)]
    return stats_keys, [f"{by.worker}{SEP}finished", str(STATS_TTL_S), token(by.instance, run_id, job_id)]


def count_finished(pipe: Any, run_id: str, job_id: str, by: Taker) -> None:
    """Add the ledger's writes for a stored outcome to a pipeline: five replies."""
    stats = keys.worker_stats(by.worker)
    pipe.hincrby(keys.run(run_id, "ledger"), f"{by.worker}{SEP}finished", 1)
    pipe.hincrby(stats, "finished", 1)
    pipe.hset(stats, "last_result_at", now())
    pipe.expire(stats, STATS_TTL_S)
    pipe.lrem(keys.running(by.queue), 0, token(by.instance, run_id, job_id))


# KEYS: per held job its lease and its run's results, then kombu's unacked hash and index;
# ARGV: the lease's TTL in ms, now, then per held job: owner, job id, delivery tag ('' for none),
# kombu's unacked entry for that tag.
_RENEW = """
local n = (#KEYS - 2) / 2
local unacked, index = KEYS[#KEYS - 1], KEYS[#KEYS]
local renewed = 0
for i = 1, n do
  local at = 2 + (i - 1) * 4
  local owner, job, tag, payload = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  if redis.call('GET', KEYS[2 * i - 1]) == owner then
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[1])
    renewed = renewed + 1
    if tag ~= '' and redis.call('HEXISTS', KEYS[2 * i], job) == 0 and redis.call('HEXISTS', unacked, tag) == 0 then
      redis.call('HSET', unacked, tag, payload)
      redis.call('ZADD', index, 'NX', ARGV[2], tag)
    end
  end
end
return renewed
"""
# KEYS: the lease; ARGV: owner
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Ledger:
    def __init__(self, r: Any) -> None:
        self._r = r  # a fleet.store.connection.Translating client

    # -- written by workers ---------------------------------------------------------------
    def started(self, run_id: str, job_id: str, queue: str, worker: str, instance: str, delivery: int) -> str | None:
        """A worker took a job (one transaction). Returns the worker that held the job before,
        whose delivery died when this is a redelivery (and counts it against that worker).
        The first delivery of a job is recorded by fleet.store.begin.lua instead, with the same
        writes (started_script), in the round trip that counts the delivery."""
        holders, ledger, stats, running = started_keys(run_id, queue, worker)
        pipe = self._r.pipeline(transaction=True)
        pipe.hget(holders, job_id)
        pipe.hset(holders, job_id, worker)
        pipe.hincrby(ledger, f"{worker}{SEP}received", 1)
        pipe.hincrby(stats, "received", 1)
        pipe.hset(stats, "last_received_at", now())
        pipe.expire(stats, STATS_TTL_S)
        pipe.lpush(running, token(instance, run_id, job_id))
        previous = pipe.execute()[0]
        if delivery > 1 and previous:
            self._died(run_id, str(previous))
        return str(previous) if previous else None

    def _died(self, run_id: str, worker: str) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.hincrby(keys.run(run_id, "ledger"), f"{worker}{SEP}died", 1)
        pipe.hincrby(keys.worker_stats(worker), "died", 1)
        pipe.expire(keys.worker_stats(worker), STATS_TTL_S)
        pipe.execute()

    def renew_leases(
        self, held: Iterable[tuple[str, str, str]], messages: Iterable[Unacked | None] | None = None
    ) -> int:
        """Renew the leases of (run id, delivery counter, owner) where that owner still holds
        them, for LEASE_S from now (Redis's clock); one round trip. Returns how many were renewed.

        With `messages` (one per lease, in the same order: the job id, the delivery's tag and
        kombu's unacked entry for it), a job still held and without a result gets its unacked
        entry back where it is gone: a duplicate delivery carries the same tag, and its
        acknowledgement removes the entry the running delivery needs to be restored if its
        process or its worker dies (scripts/adversary/duplicate_ack_loses_live.py)."""
        held = list(held)
        if not held:
            return 0
        found = list(messages) if messages is not None else [None] * len(held)
        script_keys: list[str] = []
        args = [str(int(LEASE_S * 1000)), repr(now())]
        for (run_id, counter, owner), message in zip(held, found, strict=True):
            script_keys += [keys.lease(run_id, counter), keys.run(run_id, "results")]
            args += [owner, *(message or ("", "", ""))]
        script_keys += [keys.UNACKED, keys.UNACKED_INDEX]
        return int(self._r.eval(_RENEW, len(script_keys), *script_keys, *args))

    def release_lease(self, run_id: str, counter: str, owner: str) -> bool:
        """Drop a job's lease if this owner holds it (its process died: the job may be taken
        again at once). Returns whether it was dropped."""
        return bool(self._r.eval(_RELEASE, 1, keys.lease(run_id, counter), owner))

    def finished(self, run_id: str, job_id: str, queue: str, worker: str, instance: str) -> None:
        """The worker has stored an outcome of the job (one round trip; a worker sends these
        writes with the result itself: fleet.store.results.put_result's `finished_by`)."""
        pipe = self._r.pipeline(transaction=False)
        count_finished(pipe, run_id, job_id, Taker(queue, worker, instance))
        pipe.execute()

    def prune_running(self, queues: Iterable[str], live_instances: set[str]) -> int:
        """Drop the running tokens of worker starts that are gone and of jobs that have a
        result. Returns how many were dropped."""
        dropped = 0
        for queue in queues:
            tokens = [str(t) for t in self._r.lrange(keys.running(queue), 0, -1)]
            if not tokens:
                continue
            parts = [t.split("|", 2) for t in tokens]
            pipe = self._r.pipeline(transaction=False)
            for p in parts:
                if len(p) == 3:
                    pipe.hexists(keys.run(p[1], "results"), p[2])
                else:  # not a token of ours: dropped
                    pipe.exists(keys.RUNS)
            done = pipe.execute(raise_on_error=False)
            stale = {
                t
                for t, p, has_result in zip(tokens, parts, done, strict=True)
                if len(p) != 3 or p[0] not in live_instances or has_result is True or has_result == 1
            }
            if stale:
                pipe = self._r.pipeline(transaction=False)
                for t in stale:
                    pipe.lrem(keys.running(queue), 0, t)
                dropped += sum(int(n) for n in pipe.execute())
        return dropped

    # -- read by the orchestrator -----------------------------------------------------------
    # A key of another type reads as nothing recorded: the run and its report go on without it.
    def running_count(self, queue: str) -> int:
        try:
            return int(self._r.llen(keys.running(queue)))
        except StoreCorrupt:
            return 0

    def holders(self, run_id: str) -> dict[str, str]:
        """Job id -> the worker that last took it, in this run."""
        try:
            raw = self._r.hgetall(keys.run(run_id, "holders"))
        except StoreCorrupt:
            return {}
        return {str(k): str(v) for k, v in raw.items()}

    def run_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Worker -> {received, finished, died} in this run."""
        out: dict[str, dict[str, int]] = {}
        try:
            raw = self._r.hgetall(keys.run(run_id, "ledger"))
        except StoreCorrupt:
            return {}
        for field, value in raw.items():
            worker, _, counter = str(field).rpartition(SEP)
            if counter in (*COUNTERS, DUPLICATE) and re.fullmatch(r"[0-9]{1,15}", str(value)):  # never negative
                out.setdefault(worker, dict.fromkeys(COUNTERS, 0))[counter] = int(value)
        return out

    def worker_stats(self) -> dict[str, dict[str, float]]:
        """Worker name -> its counters and last times, across runs: finite, non-negative values
        only (records.decode_worker_stats)."""
        prefix = keys.worker_stats("")
        names = sorted(str(k) for k in self._r.scan_iter(keys.worker_stats("*")))
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        out: dict[str, dict[str, float]] = {}
        for name, raw in zip(names, pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(raw, dict):
                continue  # a key of another type: nothing to show for it
            out[name.removeprefix(prefix)] = records.decode_worker_stats(raw)
        return out
