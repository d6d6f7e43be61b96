"""Repro (OPEN, low): a copy of a running job's message with "rerun": 1 runs the job a second time at
once. The lease is per delivery counter (fleet/store/ledger.py: "<job>" for the first run,
"<job>#1" for rerun 1), so the copy's first delivery of counter "<job>#1" finds no lease and
runs, beside the real delivery (counter "<job>"). job_problem accepts any rerun from 0 to
MAX_RERUNS whatever the job's `reruns` (0 here), and a delivery 1 skips the "already rerun"
check. Per-counter leases are needed (rerun n+1 is published before rerun n's process exits);
the gap is that a rerun message is not checked against the job's rerun records (a rerun n
needs n records kept).
Expected: the copy refused or a duplicate; one run. Got on main: two 'received' for one job in
the ledger, both processes run it (two stored outcomes: a result and a late attempt, or one
overwriting the other).

Usage: start redis and `python -m fleet.launcher --devices cpu --concurrency 2 --name adv` on
FLEET_REDIS_URL, then: FLEET_REDIS_URL=... python scripts/adversary/rerun_counter_twice.py"""

import json
import os
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
app = make_app(url)
run_id = new_run_id()
(job,) = plan_jobs(run_id, load_catalog(), ["minilm"], ["cpu"], RunSettings(time_limit_s=120, repeats=2000))
started = now()
meta = {"run_id": run_id, "started_at": started, "deadline": started + 900, "deadline_s": 900, "total": 1}
meta |= {"families": ["minilm"], "devices": ["cpu"], "catalog": "shipped", "origin": "adv"}
store.create_run(meta, [job])
copy = {**job, "rerun": 1}
with app.connection_for_write() as conn:
    msgs = RunMessages(app, datetime.fromtimestamp(started + 900, UTC), conn.default_channel)
    store._r.lpush("cpu", msgs.task(job, json.dumps(job), "adv-real", "adv-tag-r2"))
    store._r.lpush("cpu", msgs.task(copy, json.dumps(copy), "adv-copy", "adv-tag-c2"))
deadline = time.monotonic() + 150
while time.monotonic() < deadline and (store._r.llen("cpu") or store._r.hlen(keys.UNACKED)):
    time.sleep(0.5)
counts = store.ledger.run_counts(run_id)
late = store._r.llen(keys.run(run_id, "late")) if store._r.type(keys.run(run_id, "late")) == "list" else 0
received = sum(c.get("received", 0) for c in counts.values())
print("ledger:", counts, "attempts:", store.attempts(run_id), "late attempts:", late)
if received > 1:
    raise SystemExit(f"DEFECT: one job received and run {received} times (the copy claimed rerun 1)")
print("ok: one run")
