"""Repro (third pass, low): sent_at is not compared (a message-only field), so a copy of a real
job's message with the run's job and its own `sent_at` (any time from 1970 to a day ahead passes
fleet.numbers.sent_at_problem), pushed before the run's own message, is run as the job, and the
job's result keeps the copy's sent_at (fleet.protocol.terminal_result / the result's queue wait):
the run's accounting (orchestrator/accounting.py: queue wait = started_at - sent_at, p50/p90/max
per queue) then reports a queue wait of 56 years, or a negative one with a sent_at ahead of now.

Expected on a fixed build: the result's sent_at is the run's own (the submit's time, or one no
earlier than the run's start), not the copy's. Exit 1: defect shown (the stored result's sent_at
is the copy's 1.0); 0: not shown.

Usage: as envelope_timelimit.py (redis on 6573, one worker), then
FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/sent_at_copy.py"""

import json

from _third import entry, new_run, outcome, push, settle

job = new_run(time_limit_s=120, repeats=20)
push(entry(job, body_job=json.dumps({**job, "sent_at": 1.0})), entry(job))
result = settle(job["run_id"], job["job_id"])
got = result or {}
print("result:", outcome(result), "| sent_at:", got.get("sent_at"), "| started_at:", got.get("started_at"))
if result is not None and result.get("sent_at") == 1.0:
    wait = result["started_at"] - result["sent_at"]
    raise SystemExit(f"DEFECT: the copy's sent_at is the job's: a queue wait of {wait / 86400 / 365.25:.0f} years")
print("ok: not shown")
