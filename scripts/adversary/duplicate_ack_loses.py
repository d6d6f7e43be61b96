"""Repro (OPEN, exits 1 on main): a duplicate delivery's acknowledgement removes the message of the
job that is still running, so when that job's pool process then dies the job is LOST: nothing is
left to deliver it again.

A second delivery of a running job carries the SAME delivery tag as the first one: kombu's restore
(after the visibility timeout, or fleet.redelivery.restore_orphans for a worker whose heartbeat
lapsed while its pool process still runs the job: `_beat_loop` forgets a worker whose consumer
is not consuming) re-pushes the message with its properties, tag included; an attacker who can
read `unacked` and LPUSH can push the same copy. Since the job lease, that second delivery finds
the lease of the running process and is a `duplicate`: run_check returns "already done", and
Celery acknowledges it (acks_late): kombu's ack is HDEL unacked <tag>, the running delivery's
entry. The first worker's pool process then dies (OOM kill, segfault): RunCheckRequest.on_failure
releases the lease and Celery rejects with requeue (task_reject_on_worker_lost), which in kombu is
restore_by_tag: HGET unacked <tag> -> nothing, nothing pushed. The job has no result, no message
queued or held: LOST at the run's deadline. Before the lease, the second delivery ran the job
(twice, but it had a result).

This replays, with kombu's own Redis channels (the fleet's transport) and the store's calls in
the order workers.app.run_check and Celery make them, two workers: W1 takes the job, the message
is delivered again (MODE=restore: the fleet's own restore_unacked, as restore_orphans does;
MODE=copy: an attacker LPUSHes a copy of the unacked entry), W2 finds W1's lease (duplicate) and
acknowledges, W1's pool process dies (lease released, message rejected with requeue).
Expected: the job's message back on the queue (or unacked), to be delivered again.
Got on main: queue 0, unacked 0, no result: the job is LOST.

Usage: FLEET_REDIS_URL=redis://127.0.0.1:PORT/DB MODE=restore|copy \
    python scripts/adversary/duplicate_ack_loses.py   (an otherwise unused DB: no worker on it)"""

import json
import os

from kombu import Connection, Queue

from fleet.broker import TRANSPORT
from fleet.store import ResultStore
from fleet.store import keys as store_keys
from fleet.store.ledger import Taker

url, mode = os.environ["FLEET_REDIS_URL"], os.environ.get("MODE", "restore")
store = ResultStore(url)
r = store._r  # the store's own client, for the raw reads below
run_id, job_id, queue = "adv-dupack", "a@cpu", "cpu"
store.delete_run(run_id)
r.delete(queue, store_keys.UNACKED, store_keys.UNACKED_INDEX)
job = {"run_id": run_id, "job_id": job_id, "family": "a", "device": "cpu", "queue": queue}
store.create_run({"run_id": run_id, "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [job])

w1, w2 = Taker(queue, "cpu@one", "i1", 101), Taker(queue, "cpu@two", "i2", 202)
with Connection(url, transport=TRANSPORT) as c1, Connection(url, transport=TRANSPORT) as c2:
    ch1, ch2 = c1.channel(), c2.channel()
    c1.Producer(ch1).publish({"job": job}, routing_key=queue, declare=[Queue(queue)])
    m1 = ch1.basic_get(queue, no_ack=False)  # W1 receives it: kombu writes unacked[tag]
    tag = m1.delivery_tag
    done, delivery, _ = store.begin_delivery(run_id, job_id, None, w1)
    assert not done and delivery == 1, (done, delivery)  # W1's pool process runs the job (lease held)

    if mode == "copy":  # an attacker who can read unacked and LPUSH
        payload, _exchange, _rk = json.loads(r.hget(store_keys.UNACKED, tag))
        r.lpush(queue, json.dumps(payload))
    else:  # the fleet's own restore of a held message (restore_orphans, kombu's visibility restore)
        assert store.transport.restore_unacked(tag)
    m2 = ch2.basic_get(queue, no_ack=False)  # W2 receives the same message, same tag
    assert m2 is not None and m2.delivery_tag == tag, m2
    done2, _, _ = store.begin_delivery(run_id, job_id, None, w2)
    print(f"W2: done={done2} (a duplicate of W1's running delivery: run_check returns 'already done')")
    ch2.basic_ack(tag)  # Celery acknowledges the duplicate (acks_late, the task returned)

    # W1's pool process dies mid-job: RunCheckRequest.on_failure releases the lease, then Celery
    # rejects the message with requeue (task_reject_on_worker_lost).
    store.ledger.release_lease(run_id, job_id, w1.owner)
    ch1.basic_reject(tag, requeue=True)

    queued, unacked = int(r.llen(queue)), int(r.hlen(store_keys.UNACKED))
    has_result = store.result_count(run_id)
print(f"MODE={mode}: queued={queued} unacked={unacked} results={has_result}")
store.delete_run(run_id)
r.delete(queue, store_keys.UNACKED, store_keys.UNACKED_INDEX)
if queued + unacked == 0 and has_result == 0:
    raise SystemExit("DEFECT: the job's only message was acknowledged by its duplicate; after W1 died it is LOST")
print("ok: the job's message is still there to be delivered again")
