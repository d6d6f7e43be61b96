"""Attack 3: jobs with hostile names and odd family_spec values, published by
orchestrator.publish (the per-run template) and by Celery's app.send_task; both queue entries
decoded with kombu and compared (ids, tags, times and the clock masked).

Usage: FLEET_REDIS_URL=redis://127.0.0.1:PORT/DB python scripts/adversary/publish_vs_send_task.py
(use an otherwise unused DB: no worker may consume the queue). Exit 0: every pair equal."""

import json
import os
import sys
from datetime import UTC, datetime

import redis
from kombu.transport.virtual import Message

from fleet.broker import RUN_CHECK_TASK, make_app
from fleet.timing import hard_time_limit
from orchestrator.publish import argsrepr, publish

url = os.environ["FLEET_REDIS_URL"]
r = redis.Redis.from_url(url)
app = make_app(url)
QUEUE = "cpu"
NAMES = [
    "q\"uote's",
    "ünïcødé-名前-🙂",
    "100%-%s-%(x)s-%%",
    "back\\slash\nnew\tline",
    "x" * 290,
    "\u2028sep\u2029",
    "{braces}[brackets]",
]
SPECS = [
    {"name": "s", "check": "forward", "x": 1e308, "y": -0.0, "z": 2**70, "u": "é\u0000", "n": None, "l": [[], {}]},
    {},
    {"deep": {"a": {"b": {"c": [1, 2.5, "три"]}}}},
]


def job(i: int, name: str, spec: dict) -> dict:
    return {
        "run_id": f"adv-run-{i}-ü",
        "job_id": f"{name}@cpu",
        "family": name,
        "device": "cpu",
        "queue": QUEUE,
        "family_spec": spec,
        "time_limit_s": 7.5 + i,
        "repeats": 1,
        "max_attempts": 3,
        "pins": [],
        "lock": [],
        "reruns": 0,
        "rerun": 0,
    }


def decoded(raw: bytes) -> dict:
    payload = json.loads(raw)
    m = Message(payload, channel=app.connection_for_write().default_channel)
    body = m.decode()
    props = dict(m.properties)
    headers = dict(m.headers)
    for k in ("id", "root_id"):
        headers[k] = "<id>"
    for k in ("correlation_id", "delivery_tag", "expiration"):
        props[k] = "<masked>"
    props.get("delivery_info", {}).pop("redelivered", None)
    args = body[0]
    args[0].pop("sent_at", None)
    return {
        "body": body,
        "headers": headers,
        "properties": props,
        "content_type": m.content_type,
        "content_encoding": m.content_encoding,
    }


jobs = [job(i, n, SPECS[i % len(SPECS)]) for i, n in enumerate(NAMES)]
expires = datetime.fromtimestamp(2e9, UTC)
r.delete(QUEUE)
failures = 0
for j in jobs:
    publish(app, [j], expires, {j["job_id"]: json.dumps(j)})
    ours = r.rpop(QUEUE)
    app.send_task(
        RUN_CHECK_TASK,
        args=[{**j}],
        queue=QUEUE,
        expires=expires,
        argsrepr=argsrepr(j),
        kwargsrepr="{}",
        time_limit=hard_time_limit(j["time_limit_s"]),
        soft_time_limit=j["time_limit_s"],
        ignore_result=True,
    )
    theirs = r.rpop(QUEUE)
    a, b = decoded(ours), decoded(theirs)
    diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    if diff:
        # narrow to the differing header/property keys
        for part in ("headers", "properties"):
            if part in diff:
                diff[part] = {
                    k: (a[part].get(k), b[part].get(k))
                    for k in set(a[part]) | set(b[part])
                    if a[part].get(k) != b[part].get(k)
                }
        failures += 1
        print("DIFF", repr(j["family"])[:60], json.dumps(diff, default=repr, ensure_ascii=False)[:1500])
    else:
        print("same", repr(j["family"])[:60])
# 0 jobs: publish nothing, raise nothing
publish(app, [], expires, {})
print("0 jobs: queue length", r.llen(QUEUE))
sys.exit(1 if failures else 0)
