"""Repro (fixed on h2-adv: exits 0): a job message with max_attempts 0.5 passed fleet.jobs.job_problem
(a number in (0, 100]) and run_check compares `delivery > int(max_attempts)`, i.e. 1 > 0: the job's
first delivery "gave up" at once, storing FAILED worker_lost ("the process running this job died
on each of 0 deliveries") for a real job of the run without running anything; the real message
then finds the result ("already done"). Whoever can LPUSH one copy of a job's message decides
its result, and the report blames a lost worker.
Expected: the message refused as a bad job, saying why (max_attempts). Got on main: result
FAILED/worker_lost, delivery 1, nothing run. Fixed (job_problem: a whole number from 1): FAILED
bad_job "refused: max_attempts must be a whole number from 1 to 100". NOTE, still open: a refused
copy of a real job stores that refusal as the job's result (only_if_absent), so the real message
that follows is "already done": a malformed copy pushed first still decides the job's outcome
(now an honest bad_job, not a lost worker).

Usage: start redis and `python -m fleet.launcher --devices cpu --concurrency 1 --name adv` on
FLEET_REDIS_URL, then: FLEET_REDIS_URL=... python scripts/adversary/fractional_max_attempts.py"""

import json
import os
import time
from datetime import UTC, datetime

from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.protocol import now
from fleet.settings import RunSettings
from fleet.store import ResultStore, new_run_id
from orchestrator.publish import RunMessages
from orchestrator.submit import plan_jobs

url = os.environ["FLEET_REDIS_URL"]
store = ResultStore(url)
app = make_app(url)
run_id = new_run_id()
(job,) = plan_jobs(run_id, load_catalog(), ["minilm"], ["cpu"], RunSettings(time_limit_s=120))
started = now()
meta = {"run_id": run_id, "started_at": started, "deadline": started + 900, "deadline_s": 900, "total": 1}
meta |= {"families": ["minilm"], "devices": ["cpu"], "catalog": "shipped", "origin": "adv"}
store.create_run(meta, [job])
hostile = {**job, "max_attempts": 0.5}
with app.connection_for_write() as conn:
    msgs = RunMessages(app, datetime.fromtimestamp(started + 900, UTC), conn.default_channel)
    store._r.lpush("cpu", msgs.task(hostile, json.dumps(hostile), "adv-hostile", "adv-tag-h"))
    time.sleep(1.0)  # the hostile copy first, then the real message
    store._r.lpush("cpu", msgs.task(job, json.dumps(job), "adv-real", "adv-tag-r"))
deadline = time.monotonic() + 120
while time.monotonic() < deadline and not store.result_count(run_id):
    time.sleep(0.2)
time.sleep(3)  # the real message's delivery too
result = next((x for x in store.results(run_id) if x["job_id"] == job["job_id"]), None)
if result is None:
    raise SystemExit("no result within 120 s")
print("result:", result["status"], (result.get("error") or {}).get("kind"), "delivery", result.get("delivery"))
if (result.get("error") or {}).get("kind") == "worker_lost":
    raise SystemExit("DEFECT: one hostile copy with max_attempts 0.5 made the real job FAILED worker_lost, unrun")
if (result.get("error") or {}).get("kind") == "bad_job" and "max_attempts" not in result["error"].get("message", ""):
    raise SystemExit(f"unexpected refusal: {result['error']}")
print("ok: not blamed on a lost worker:", (result.get("error") or {}).get("message", "")[:100])
