"""Attack 1c: shallow messages with odd but allowed header values (naive/aware/past expiries,
null time limits, the largest retries, stamps), each followed by nothing else; at the end one
message the worker answers at once. Expect: every message answered (queue and unacked empty),
none left holding the worker's slot. Usage: as deep_headers.py."""

import base64
import json
import os
import sys
import time

import redis

url = os.environ["FLEET_REDIS_URL"]
r = redis.Redis.from_url(url)
job = {"run_id": "no-such-run", "job_id": "a@cpu", "family": "a", "device": "cpu", "queue": "cpu"}
ODD = [
    {"expires": "2020-01-01T00:00:00"},
    {"expires": "2099-01-01T00:00:00"},
    {"expires": "2099-01-01T00:00:00+14:00"},
    {"expires": "2020-01-01T00:00:00-12:00"},
    {"timelimit": [None, None]},
    {"timelimit": [1e-9, 604800]},
    {"retries": 2**31 - 1, "group_index": 0, "replaced_task_nesting": 2**31 - 1},
    {"stamped_headers": ["a"], "stamps": {"a": [1, {"b": None}]}},
    {"ignore_result": False, "shadow": "x" * 255, "parent_id": "p", "group": "g"},
    {"argsrepr": "", "kwargsrepr": "", "origin": "\u2028"},
    {},  # the last: answered at once
]
for i, extra in enumerate(ODD):
    headers = {"lang": "py", "task": "fleet.run_check", "id": f"odd-{i}", "root_id": f"odd-{i}", **extra}
    entry = {
        "body": base64.b64encode(json.dumps([[job], {}, None]).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "delivery_tag": f"odd-tag-{i}",
            "delivery_info": {"exchange": "", "routing_key": "cpu"},
            "priority": 0,
            "body_encoding": "base64",
        },
    }
    r.lpush("cpu", json.dumps(entry))
deadline = time.time() + 60
while time.time() < deadline and (r.llen("cpu") or r.hlen("unacked")):
    time.sleep(0.5)
print("queue left:", r.llen("cpu"), "unacked:", r.hlen("unacked"))
sys.exit(0 if not r.llen("cpu") and not r.hlen("unacked") else 1)
