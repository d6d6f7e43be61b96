"""Repro (third pass, low): a copy of a job that already has its final result still counts a
delivery. begin.lua reads `done` and then HINCRBYs the delivery counter whatever it read, so a
copy (the run's job, content unchanged) pushed once the run is over adds a delivery to a job that
ended LOST without ever being taken: the run's accounting (orchestrator.accounting.completeness)
then says "lost: taken 1 time(s), no result" (a worker took it and died) instead of "expired:
never taken from its queue before the deadline" (no worker for it). Store level: the store calls
the worker makes (ResultStore.begin_delivery with the message's job); no worker needed.

Expected on a fixed build: a delivery of a job with a result counts nothing (or the accounting
reads deliveries only up to the result). Exit 1: defect shown; 0: not shown.

Usage: FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/copy_counted_after_result.py"""

from _third import new_run, store

from fleet.jobs import as_stored
from orchestrator import runs
from orchestrator.accounting import completeness


def why_missing(run_id: str) -> str:
    c = completeness(store.results(run_id), 1, True, store.attempts(run_id), store.ledger.holders(run_id))
    return "; ".join(f"{m['why']}: {m['detail']}" for m in c["missing"])


job = new_run(time_limit_s=120, repeats=20)
runs.abandon(store, job["run_id"], "no result before the run deadline (900 s)")  # the deadline: LOST
before = why_missing(job["run_id"])
done, delivery, _ = store.begin_delivery(job["run_id"], job["job_id"], claimed=as_stored(dict(job)))  # the copy
after = why_missing(job["run_id"])
print("before the copy:", before)
print(f"the copy: done={done} delivery={delivery}")
print("after the copy: ", after)
store.delete_run(job["run_id"])
if before != after:
    raise SystemExit("DEFECT: a copy delivered after the job's final result changed what the run reports")
print("ok: not shown")
