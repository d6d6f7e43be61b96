"""Attack 1b: queue entries whose headers (or body) nest close to Python's recursion limit, so
that one parser accepts them and a later one (json.dumps, repr, Celery's own code) overflows.
Expect: each dead-lettered or run, the worker alive and still consuming (a real job after them
gets its result).

Usage: a worker on FLEET_REDIS_URL (as in hostile_messages.py), WORKER_PID=its launcher's pid."""

import base64
import os
import sys
import time

import redis

from fleet.store import ResultStore

url = os.environ["FLEET_REDIS_URL"]
r = redis.Redis.from_url(url)
store = ResultStore(url)
before = store.transport.dead_letter_count()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def entry(headers_extra: str, body: str) -> bytes:
    head = '{"lang": "py", "task": "fleet.run_check", "id": "deep-x", "root_id": "deep-x", "x": ' + headers_extra + "}"
    return (
        '{"body": "' + base64.b64encode(body.encode()).decode() + '", "content-encoding": "utf-8", '
        '"content-type": "application/json", "headers": ' + head + ', "properties": {"delivery_tag": "t-deep", '
        '"delivery_info": {"exchange": "", "routing_key": "cpu"}, "priority": 0, "body_encoding": "base64"}}'
    ).encode()


depths = [500, 800, 900, 950, 970, 980, 990, 995, 999, 1200, 5000, 100000]
for d in depths:
    r.lpush("cpu", entry(nested(d), "[[{}], {}, null]"))
    r.lpush("cpu", entry("1", "[[" + nested(d) + "], {}, null]"))
time.sleep(20)
left = r.llen("cpu")
count = store.transport.dead_letter_count() - before
print(f"pushed {2 * len(depths)}, dead-lettered {count}, left on the queue {left}")
reasons = sorted({d.get("reason", "")[:90] for d in store.transport.dead_letters(count)})
for reason in reasons:
    print("  -", reason)
alive = True
pid = os.environ.get("WORKER_PID")
if pid:
    try:
        os.kill(int(pid), 0)
    except OSError:
        alive = False
print("worker alive:", alive)
sys.exit(0 if alive and left == 0 and count == 2 * len(depths) else 1)
