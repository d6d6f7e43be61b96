"""Third pass, what held: copies of a real job's message with other content, each pushed before
the run's own message, against a real worker. Each must be dead-lettered (or, for the kombu-typed
one, fail as a task) without counting a delivery, taking a lease or storing anything; the run's own
message then runs the job (one delivery, one `received` in the ledger, no `duplicate`).
Copies: a changed field (repeats 21, a candidate id, a pin value, a pin value NaN, a pin integer
past 2**53 where the stored has 1.5), an extra key, a missing key, null for a missing key, an
unpublished rerun 1, rerun as 1.0 / true / "1", sent_at two days ahead, a string with a lone
surrogate (cjson cannot read it), a pin nested 24 deep, and a pin tolerance that kombu's json
decodes into a Decimal ({"__type__": "decimal", ...}; json.dumps then raises TypeError in
begin_delivery: the copy fails as a task, logged, and is not dead-lettered).

Expected (h3-job and a fixed build): exit 0. Exit 1: a copy was counted, stored or run.

Usage: as envelope_timelimit.py (redis on 6573, one worker `--concurrency 2`), then
FLEET_REDIS_URL=redis://127.0.0.1:6573/0 python scripts/adversary/copies_that_held.py"""

import copy
import json
import time

from _third import dead_letters_of, entry, new_run, outcome, push, settle, store

from fleet.store import keys

job = new_run(time_limit_s=120, repeats=20)


def bent(change):  # a deep copy of the job with one change
    c = copy.deepcopy(job)
    change(c)
    return c


def nest(depth):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


copies = {
    "repeats 21": bent(lambda c: c.update(repeats=21)),
    "candidate id": bent(lambda c: c["family_spec"]["candidates"][0].update(id="evil/model")),
    "pin value": bent(lambda c: c["pins"][0]["expected"]["embedding_sample"].__setitem__(0, 0.5)),
    "pin NaN": bent(lambda c: c["pins"][0]["expected"]["embedding_sample"].__setitem__(0, float("nan"))),
    "pin 2**53+1": bent(lambda c: c["pins"][0]["expected"].update(x=2**53 + 1)),
    "extra key": bent(lambda c: c.update(extra=1)),
    "missing lock": bent(lambda c: c.pop("lock")),
    "null variants": bent(lambda c: c.update(variants=None)),
    "rerun 1 unpublished": bent(lambda c: c.update(rerun=1)),
    "rerun 1.0": bent(lambda c: c.update(rerun=1.0)),
    "rerun true": bent(lambda c: c.update(rerun=True)),
    'rerun "1"': bent(lambda c: c.update(rerun="1")),
    "sent_at +2 days": bent(lambda c: c.update(sent_at=time.time() + 2 * 86400)),
    "lone surrogate": bent(lambda c: c["family_spec"].update(description="\udcff")),
    "pin nested 24": bent(lambda c: c["pins"][0].update(deep=nest(24))),
}
texts = {name: json.dumps(c) for name, c in copies.items()}
decimal = copy.deepcopy(job)
decimal["pins"][0]["tolerance"] = {"embedding_sample": {"__type__": "decimal", "__value__": "0.0001"}}
texts["kombu Decimal"] = json.dumps(decimal)
for text in texts.values():
    push(entry(job, body_job=text))
push(entry(job))
result = settle(job["run_id"], job["job_id"])
time.sleep(3)
letters = dead_letters_of(job["run_id"])
counts = store.ledger.run_counts(job["run_id"])
attempts = store.attempts(job["run_id"])
late = store._r.llen(keys.run(job["run_id"], "late"))
print("result:", outcome(result), "| delivery:", (result or {}).get("delivery"))
print("attempts:", attempts, "| ledger:", counts, "| late:", late)
print(f"dead letters: {len(letters)} of {len(texts)} copies")
for d in letters:
    print("  ", d.get("reason", "")[:150])
received = sum(c.get("received", 0) for c in counts.values())
duplicate = sum(c.get("duplicate", 0) for c in counts.values())
problems = []
if result is None or result["status"] != "REAL" or result.get("delivery") != 1:
    problems.append("the job's own message did not run it once, REAL")
if attempts != {job["job_id"]: 1} or received != 1 or duplicate or late:
    problems.append("a copy was counted")
if len(letters) < len(texts) - 1:  # all but the kombu-typed one
    problems.append("a copy was neither dead-lettered nor refused")
if problems:
    raise SystemExit("DEFECT: " + "; ".join(problems))
print("ok: every copy refused, nothing counted")
