"""Repro (third pass): where begin.lua's compare (cjson + Lua equality) and Python (what the worker
then runs) disagree, at the store call itself (ResultStore.begin_delivery with the message's job,
as workers/app.py run_check makes it; no worker needed). For each case a run is created whose
stored job holds value A in a pin (pins[0]["x"]), and the delivery claims the same job with B:
  taken as the job although Python differs:  {} / [];  2**53 / 2**53 + 1;  10**400 / 10**401;
                                             inf / 10**400   (cjson: one empty table; doubles; inf)
  the run's own job refused:                 NaN / NaN (Lua: NaN ~= NaN);
                                             "\\udcff" / "\\udcff" (cjson cannot read a lone surrogate)
empty_object_as_list.py shows the first with a real worker (a job failed), nan_pin_loses_job.py
the NaN one (a job lost).

Expected on a fixed build: each copy refused (NotTheRunsJob) and each run's own job taken.
Exit 1: defect shown (any case otherwise); 0: none.

Usage: FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/lua_equal_python_not.py"""

import copy

from _third import new_run, store

from fleet.errors import NotTheRunsJob
from fleet.jobs import as_stored

base = new_run(time_limit_s=120, repeats=20)
store.delete_run(base["run_id"])
nan = float("nan")
cases = [  # (name, stored value, claimed value, must be taken)
    ("{} vs []", {}, [], False),
    ("2**53 vs 2**53+1", 2**53, 2**53 + 1, False),
    ("10**400 vs 10**401", 10**400, 10**401, False),
    ("inf vs 10**400", float("inf"), 10**400, False),
    ("NaN (the run's own)", nan, nan, True),
    ("lone surrogate (the run's own)", "\udcff", "\udcff", True),
]
shown = []
for name, stored, claimed, own in cases:
    job = copy.deepcopy(base)
    job["pins"][0]["x"] = stored
    job = new_run(pins=job["pins"], time_limit_s=120, repeats=20)
    message = copy.deepcopy(job)
    message["pins"][0]["x"] = claimed
    try:
        store.begin_delivery(job["run_id"], job["job_id"], claimed=as_stored(message))
        taken = "taken"
    except NotTheRunsJob as exc:
        taken = "refused: " + exc.message.split(": ", 1)[-1]
    bad = taken.startswith("refused") if own else taken == "taken"
    print(f"{name:32} {taken:60} {'DEFECT' if bad else 'ok'}")
    if bad:
        shown.append(name)
    store.delete_run(job["run_id"])
if shown:
    raise SystemExit(f"DEFECT: begin.lua and Python disagree on: {', '.join(shown)}")
print("ok: none")
