"""Repro (third pass): a copy of a real job's message, its job exactly the run's stored job, but
with its own Celery `timelimit` header, is taken as the job: the job's outcome is decided by the
copy's time limits. begin.lua compares the job (the task's argument) with the stored one; the
envelope around it is checked only for its shape (fleet.messages: each limit in (0, 7 days]), and
Celery enforces the header's limits: a soft limit of 0.5 s raises SoftTimeLimitExceeded in the
job (FAILED timeout "soft time limit"), and workers/app.py _rerun publishes every rerun with
`task.request.timelimit`, the copy's, so the reruns fail the same way. The run's own message,
consumed after, finds the result: "already done".
A control run (the same job, only its own message) shows what the job's message produces.

Expected on a fixed build: the attacked job's outcome is the control's (e.g. REAL); the copy is
refused (a timelimit other than the one its job implies: [hard_time_limit(t), t]) or its limits
are taken from the stored job. Exit 1: defect shown (the attacked job FAILED timeout while the
control did not); 0: not shown.

LIMIT=hard: the copy's header is `[1, null]` instead: the hard limit kills the pool process and
RunCheck.on_failure stores FAILED timeout ("hard time limit reached").

Usage: redis-server --port 6573 --save '' --appendonly no; a worker on it:
FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python -m fleet.launcher --devices cpu --concurrency 2 --name adv3
then FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/envelope_timelimit.py"""

import os

from _third import entry, new_run, outcome, push, settle

HARD = os.environ.get("LIMIT") == "hard"
LIMITS = [1, None] if HARD else [600, 0.5]
REPEATS = 3000 if HARD else 50  # the hard limit must land while the job runs

control = new_run(time_limit_s=120, repeats=REPEATS, reruns=1)
push(entry(control))
honest = settle(control["run_id"], control["job_id"])
print("control (its own message only):", outcome(honest))

job = new_run(time_limit_s=120, repeats=REPEATS, reruns=1)
copy = entry(job, headers={"timelimit": LIMITS})  # the job unchanged; only the envelope's limits
push(copy, entry(job))  # the copy first, then the run's own message
attacked = settle(job["run_id"], job["job_id"])
print(f"attacked (copy with timelimit {LIMITS} first):", outcome(attacked))
if attacked is not None and attacked.get("reruns"):
    print("  its reruns:", [(r["status"], r["error_kind"], r["message"][:40]) for r in attacked["reruns"]])
kind = ((attacked or {}).get("error") or {}).get("kind")
if kind == "timeout" and ((honest or {}).get("error") or {}).get("kind") != "timeout":
    raise SystemExit("DEFECT: the copy's envelope decided the real job's outcome (FAILED timeout)")
print("ok: not shown")
