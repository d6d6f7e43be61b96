"""Attack 1: hostile messages LPUSHed straight onto the cpu queue, against a real worker.

A run of 3 real jobs (minilm, t5, llama on cpu) is recorded; each job's message is built from
the run's template (orchestrator.publish.RunMessages) and some are altered; hostile extras are
pushed beside them. Then it waits for the run and checks: every real job has one result, one
counted delivery and one 'received' in the ledger; each hostile message dead-lettered (with its
reason) or ignored; the worker still alive and consuming.

Usage: start redis and `fleet-worker --devices cpu --concurrency 1 --name X` on FLEET_REDIS_URL,
then: FLEET_REDIS_URL=... python scripts/adversary/hostile_messages.py"""

import base64
import json
import os
import sys
import time
from datetime import UTC, datetime

import redis

from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.protocol import now
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys, new_run_id
from orchestrator.publish import RunMessages
from orchestrator.submit import plan_jobs

url = os.environ["FLEET_REDIS_URL"]
r = redis.Redis.from_url(url)
store = ResultStore(url)
app = make_app(url)
run_id = new_run_id()
jobs = plan_jobs(run_id, load_catalog(), ["minilm", "t5", "llama"], ["cpu"], RunSettings(time_limit_s=120))
started = now()
meta = {
    "run_id": run_id,
    "started_at": started,
    "deadline": started + 900,
    "deadline_s": 900,
    "total": len(jobs),
    "families": sorted(j["family"] for j in jobs),
    "devices": ["cpu"],
    "catalog": "shipped",
    "origin": "adv",
}
store.create_run(meta, jobs)
expires = datetime.fromtimestamp(started + 900, UTC)
dl_before = store.transport.dead_letter_count()
with app.connection_for_write() as conn:
    msgs = RunMessages(app, expires, conn.default_channel)


def entry(job, task_id, tag):
    return json.loads(msgs.task(job, json.dumps(job), task_id, tag))


def body_of(e):
    return json.loads(base64.b64decode(e["body"]))


def with_body(e, body):
    e = json.loads(json.dumps(e))
    e["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return e


minilm, t5, llama = jobs
pushed = []
# 1. the real minilm job, but headers.id/root_id/argsrepr differ from the template's properties
e = entry(minilm, "id-A", "tag-1")
e["headers"].update(id="hostile-other-id", root_id="x", argsrepr="[not what the template says]")
pushed.append(("id/argsrepr differ (real job)", e, "runs once"))
# 2. the same real job again, same delivery tag (duplicated tag)
pushed.append(("duplicate of 1, same delivery tag", entry(minilm, "id-B", "tag-1"), "already done"))
# 3. t5, claiming it is a redelivery (headers.redelivered, delivery_info.redelivered)
e = entry(t5, "id-C", "tag-3")
e["headers"]["redelivered"] = True
e["properties"]["delivery_info"]["redelivered"] = True
pushed.append(("t5 claims a redelivery", e, "delivery 1"))
# 4. a job of an unknown run
ghost = {**llama, "run_id": "no-such-run"}
pushed.append(("job of an unknown run", entry(ghost, "id-D", "tag-4"), "nothing counted"))
# 5. a made-up job of the real run
made_up = {**llama, "job_id": "made-up@cpu"}
pushed.append(("made-up job of the real run", entry(made_up, "id-E", "tag-5"), "dead letter"))
# 6. huge body (2 MB job)
huge = {**llama, "pad": "x" * (2 << 20)}
pushed.append(("2 MB body", entry(huge, "id-F", "tag-6"), "dead letter"))
# 7. body not base64 / not JSON / not a list
e = entry(llama, "id-G", "tag-7")
e["body"] = "***not base64***"
pushed.append(("body not base64", e, "dead letter"))
pushed.append(("body JSON but a dict", with_body(entry(llama, "id-H", "tag-8"), {"a": 1}), "dead letter"))
# 8. argsrepr 10 KB in the headers
e = entry(llama, "id-I", "tag-9")
e["headers"]["argsrepr"] = "y" * 10000
pushed.append(("argsrepr 10 KB", e, "dead letter"))
# 9. job claims a later rerun (its own delivery counter) of the real llama job, with reruns=0
pushed.append(("llama claims rerun 2", entry({**llama, "rerun": 2}, "id-J", "tag-10"), "?"))
# 10. timelimit hard < soft, and a string
e = entry(llama, "id-K", "tag-11")
e["headers"]["timelimit"] = ["1", 2]
pushed.append(("timelimit with a string", e, "dead letter"))
# 11. not JSON at all / a JSON list entry
raw_extra = [b"\xff\xfe not utf-8", b"[1,2,3]", b'{"properties": "x"}']
# 12. finally the real llama job, as the template makes it
pushed.append(("llama, as published", entry(llama, "id-L", "tag-12"), "runs once"))

pid = os.environ.get("WORKER_PID")
for _name, e, _expect in pushed:
    r.lpush("cpu", json.dumps(e))
for raw in raw_extra:
    r.lpush("cpu", raw)

deadline = time.time() + 600
while time.time() < deadline:
    if store.result_count(run_id) >= 3 and r.llen("cpu") == 0 and not r.hlen("unacked"):
        break
    time.sleep(2)
time.sleep(3)
results = {x["job_id"]: x for x in store.results(run_id)}
attempts = store.attempts(run_id)
counts = store.ledger.run_counts(run_id)
dead = store.transport.dead_letters(50)[: store.transport.dead_letter_count() - dl_before]
print("results:", {k: v["status"] for k, v in results.items()})
print("attempts:", attempts)
print("ledger:", counts)
print("queue left:", r.llen("cpu"), "unacked:", r.hlen("unacked"), "held:", r.hlen(keys.HELD))
print(f"dead letters ({len(dead)}):")
for d in dead:
    print("  -", d.get("reason", "")[:150])
problems = []
if set(results) != {j["job_id"] for j in jobs}:
    problems.append(f"results for {sorted(results)}")
received = sum(c.get("received", 0) for c in counts.values())
finished = sum(c.get("finished", 0) for c in counts.values())
if received != 3 or finished != 3:
    problems.append(f"ledger counts received={received} finished={finished}, expected 3 and 3")
if pid:
    try:
        os.kill(int(pid), 0)
    except OSError:
        problems.append("the worker died")
print("PROBLEMS:" if problems else "OK", problems)
sys.exit(1 if problems else 0)
