"""Repro (third pass, low): begin.lua's exact-text fast path (52ca0b5: "the same text as stored
(an honest submit's message re-encoded) skips the field compare") is never taken for a submit's
message. orchestrator.submit stores json.dumps(job), which holds `"rerun": 0` (plan_jobs sets
it); the worker sends json.dumps(as_stored(job)), which drops `rerun` (fleet.jobs.MESSAGE_ONLY):
the two texts always differ, so every delivery decodes both in Lua and compares them field by
field, and any stored job cjson cannot read or compare (a NaN: nan_pin_loses_job.py; a lone
surrogate: "invalid unicode escape code") refuses the run's own message.
No worker needed: the message is built by the orchestrator's own builder from the stored text and
decoded as Celery's worker decodes it (kombu's json).

Expected on a fixed build: the re-encoded message is the stored text (or the fast path compares
what both hold). Exit 1: defect shown (they differ); 0: not shown.

Usage: FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/fast_path_never_taken.py"""

import base64
import json

from _third import entry, new_run, store
from kombu.utils.json import loads

from fleet.jobs import stored_text
from fleet.store import keys

job = new_run(time_limit_s=120, repeats=20)
stored = store._r.hget(keys.run(job["run_id"], "jobs"), job["job_id"])
envelope = json.loads(entry(job, text=stored))  # built, never pushed
(message_job,), _, _ = loads(base64.b64decode(envelope["body"]))
claimed = stored_text(dict(message_job))  # what fleet.store.results.begin_delivery sends begin.lua
store.delete_run(job["run_id"])
print("stored has rerun:", '"rerun"' in stored, "| claimed has rerun:", '"rerun"' in claimed)
print("stored  ...", stored[-60:])
print("claimed ...", claimed[-60:])
if claimed != stored:
    raise SystemExit("DEFECT: a submit's own message never takes the exact-text fast path")
print("ok: the fast path is taken")
