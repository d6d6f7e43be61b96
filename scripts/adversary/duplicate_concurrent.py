"""Repro (fixed: exits 0): the same job delivered twice at once (a duplicate message LPUSHed beside
the real one, taken by two workers) ran twice and was counted twice: the second delivery (count
2) was taken as a redelivery, so the ledger counted the first worker's delivery as 'died' while
that worker was alive and running it, and both stored outcomes counted as 'finished'. Now the
second delivery finds the first one's lease (fleet.store.ledger) and begin_delivery answers
"nothing to run": it counts as a 'duplicate' of cpu@two.

This replays workers.app.run_check's store calls for two workers in the order two concurrent
deliveries make them (no worker process needed).
Usage: FLEET_REDIS_URL=redis://127.0.0.1:PORT/DB python scripts/adversary/duplicate_concurrent.py"""

import os

from fleet.protocol import SEALED, base_result
from fleet.store import ResultStore
from fleet.store.ledger import Taker

url = os.environ["FLEET_REDIS_URL"]
store = ResultStore(url)
run_id = "adv-dup"
store.delete_run(run_id)
job = {"run_id": run_id, "job_id": "a@cpu", "family": "a", "device": "cpu", "queue": "cpu"}
store.create_run({"run_id": run_id, "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [job])
w1, w2 = Taker("cpu", "cpu@one", "i1"), Taker("cpu", "cpu@two", "i2")
outcomes = []
for me in (w1, w2):  # both begin before either finishes
    done, delivery, taken = store.begin_delivery(run_id, "a@cpu", None, me)
    if not taken:
        store.ledger.started(run_id, "a@cpu", me.queue, me.worker, me.instance, delivery)
    outcomes.append((me, done, delivery))
for me, done, _delivery in outcomes:
    if not done:
        store.put_result({**base_result(job), "status": "REAL", "worker": me.worker}, sealed=SEALED, finished_by=me)
counts = store.ledger.run_counts(run_id)
print("deliveries:", [(m.worker, d) for m, _, d in outcomes], "ledger:", counts)
store.delete_run(run_id)
died = sum(c.get("died", 0) for c in counts.values())
finished = sum(c.get("finished", 0) for c in counts.values())
raise SystemExit(0 if died == 0 and finished == 1 else f"DEFECT: died={died} finished={finished} for one job")
