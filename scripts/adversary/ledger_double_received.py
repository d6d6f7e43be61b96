"""Repro: a ledger key of another type (fleet:running:<queue> not a list) makes a first delivery
count 'received' twice: begin.lua writes holders/ledger/stats before its LPUSH fails, returns the
error text (taken=False), and workers/app.py then calls Ledger.started, whose MULTI/EXEC applies
every write again (EXEC runs the other commands when one fails).

Usage: FLEET_REDIS_URL=redis://127.0.0.1:PORT/DB python scripts/adversary/ledger_double_received.py
(mirrors run_check's two calls exactly: begin_delivery, then `if not taken: _ledger(started)`)."""

import os

import redis

from fleet.errors import FleetError
from fleet.store import ResultStore, keys
from fleet.store.ledger import Taker

url = os.environ["FLEET_REDIS_URL"]
r = redis.Redis.from_url(url, decode_responses=True)
store = ResultStore(url)
run_id = "adv-ledger"
store.delete_run(run_id)
store.create_run({"run_id": run_id, "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [{"job_id": "a@cpu"}])
r.delete(keys.running("advq"))
r.set(keys.running("advq"), "not a list")  # the corrupt ledger key
me = Taker("advq", "w@adv", "inst-adv")
done, delivery, taken = store.begin_delivery(run_id, "a@cpu", None, me)
if not taken:  # what workers/app.py run_check does next
    try:
        store.ledger.started(run_id, "a@cpu", me.queue, me.worker, me.instance, delivery)
    except FleetError as exc:
        print("ledger.started raised (logged by the worker):", exc)
received = store.ledger.run_counts(run_id)["w@adv"]["received"]
print(f"delivery={delivery} taken={taken} received={received}")
store.delete_run(run_id)
r.delete(keys.running("advq"))
raise SystemExit(0 if received == 1 else f"DEFECT: one delivery counted {received} times as received")
