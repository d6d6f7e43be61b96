"""Repro with a real worker (fixed: the lease's renewal puts the running delivery's unacked entry
back; the redelivered job is answered): duplicate_ack_loses.py's sequence, live. A real job
(minilm, 10,000 repeats so that it runs for seconds) is taken by pool process P1; its message is put
back on the queue as the fleet's own restore does (Transport.restore_unacked: restore_orphans of a
worker whose heartbeat lapsed, or kombu's visibility restore); the worker's second pool process
P2 takes it, finds P1's lease (a `duplicate`) and Celery acknowledges it. Then P1 is killed -9
(an OOM kill): the worker releases the lease and requeues the message, which is no longer in
`unacked`: nothing is requeued.
Expected: the job delivered again and answered (one result). Got on main: no result, queue and
unacked empty: the job ends LOST at the run's deadline.

Usage: start redis and `python -m fleet.launcher --devices cpu --concurrency 2 --name adv` on
FLEET_REDIS_URL (no other worker), then: FLEET_REDIS_URL=... python scripts/adversary/duplicate_ack_loses_live.py"""

import json
import os
import signal
import time
from datetime import UTC, datetime

from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.protocol import now
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys, new_run_id
from orchestrator.publish import RunMessages
from orchestrator.submit import plan_jobs

url = os.environ["FLEET_REDIS_URL"]
store = ResultStore(url)
r = store._r
app = make_app(url)
run_id = new_run_id()
(job,) = plan_jobs(run_id, load_catalog(), ["minilm"], ["cpu"], RunSettings(time_limit_s=300, repeats=10_000))
started = now()
meta = {"run_id": run_id, "started_at": started, "deadline": started + 900, "deadline_s": 900, "total": 1}
meta |= {"families": ["minilm"], "devices": ["cpu"], "catalog": "shipped", "origin": "adv"}
store.create_run(meta, [job])
with app.connection_for_write() as conn:
    msgs = RunMessages(app, datetime.fromtimestamp(started + 900, UTC), conn.default_channel)
    r.lpush("cpu", msgs.task(job, json.dumps(job), "adv-task-1", "adv-tag-1"))


def wait(what, cond, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"gave up waiting for {what}")


lease = keys.lease(run_id, job["job_id"])
owner = wait("P1 to take the job's lease", lambda: r.get(lease))
p1 = int(str(owner).rsplit(":", 1)[1])
print(f"P1 (pid {p1}) runs {job['job_id']}; lease {owner}")
wait("the message in unacked", lambda: r.hexists(keys.UNACKED, "adv-tag-1"))
assert store.transport.restore_unacked("adv-tag-1")
print("message restored to the queue (as restore_orphans does)")
dup = wait("P2's duplicate", lambda: any(c.get("duplicate") for c in store.ledger.run_counts(run_id).values()))
wait("the duplicate's ack", lambda: not r.hexists(keys.UNACKED, "adv-tag-1"), 10)
print("P2 counted a duplicate and acknowledged it; unacked:", r.hlen(keys.UNACKED))
if store.result_count(run_id):
    raise SystemExit("the job finished before P1 could be killed: raise repeats")
os.kill(p1, signal.SIGKILL)
print(f"killed P1 ({p1}); waiting 30 s for a redelivery and a result")
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not store.result_count(run_id):
    time.sleep(0.5)
queued, unacked, results = r.llen("cpu"), r.hlen(keys.UNACKED), store.result_count(run_id)
print(f"queued={queued} unacked={unacked} results={results} attempts={store.attempts(run_id)}")
if results == 0 and queued + unacked == 0:
    raise SystemExit("DEFECT: the job's message is gone and it has no result: LOST at the deadline")
deadline = time.monotonic() + 240  # the redelivery runs the 10,000 repeats again
while time.monotonic() < deadline and not store.result_count(run_id):
    time.sleep(0.5)
results = store.result_count(run_id)
print(f"after the redelivery: results={results} attempts={store.attempts(run_id)}")
raise SystemExit(0 if results == 1 else "DEFECT: the job was not answered after its redelivery")
