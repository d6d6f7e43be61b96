"""The same job delivered twice at once runs once and is counted once: a copy of a running job's
message (or a redelivery of it while its process lives) is a duplicate (fleet.store.ledger's
leases). Real workers and a real Redis; the killed-worker cases are in tests/test_faults.py."""

from __future__ import annotations

import base64
import json

from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from fleet.store.ledger import Taker
from orchestrator import report
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.helpers import orchestrator, raw_redis
from tests.test_accounting import catalog
from tests.test_faults import wait_until


def test_a_copy_of_a_running_jobs_message_taken_by_a_second_worker_runs_nothing(redis_url: str, start_worker) -> None:
    """w1 or w2 takes the job; a copy of its message (the body as kombu holds it, unacked) is
    pushed to the queue while it runs, and the idle worker takes the copy: the copy is
    acknowledged and counted as a duplicate, the job runs once, one outcome is counted."""
    workers = {w.name: w for w in (start_worker(redis_url, name=n, FLEET_TEST_SLOW_S="6") for n in ("w1", "w2"))}
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), catalog("slow"), None, ["cpu"], RunSettings(repeats=1))
    (job_id,) = store.jobs(run_id)
    wait_until(lambda: store.ledger.holders(run_id).get(job_id), timeout=90, what="a worker takes the job")
    first = store.ledger.holders(run_id)[job_id]
    other = "cpu@w2" if first == "cpu@w1" else "cpu@w1"
    (message,) = store.transport.unacked_messages()  # the real message, as the queue held it
    (args, _kwargs, _embed) = json.loads(base64.b64decode(json.loads(message)["body"]))
    assert args[0]["job_id"] == job_id
    raw_redis(redis_url).lpush("cpu", message)
    wait_until(
        lambda: store.ledger.run_counts(run_id).get(other, {}).get("duplicate") == 1, timeout=30, what="the copy taken"
    )
    assert store.result_count(run_id) == 0  # taken while the first delivery was still running
    assert wait(store, run_id) == {"SYNTHETIC": 1}
    (result,) = store.results(run_id)
    assert (result["worker"], result["delivery"]) == (first, 1)
    assert store.attempts(run_id) == {job_id: 1}  # the copy is no delivery of the job
    assert store.late_results(run_id) == []  # no second outcome anywhere
    assert store.ledger.run_counts(run_id) == {
        first: {"received": 1, "finished": 1, "died": 0},
        other: {"received": 0, "finished": 0, "died": 0, "duplicate": 1},
    }
    wait_until(lambda: not store.transport.unacked_messages(), timeout=30, what="both deliveries acknowledged")
    assert store.transport.queued("cpu") == []
    assert "a duplicate delivery, not run" in workers[other.removeprefix("cpu@")].log.read_text()
    rows = {w["name"]: w for w in report.build(store, run_id)["accounting"]["workers"]}
    assert (rows[first]["finished"], rows[first]["died"], rows[first]["duplicates"]) == (1, 0, 0)
    assert (rows[other]["finished"], rows[other]["died"], rows[other]["duplicates"]) == (0, 0, 1)
    assert report.build(store, run_id)["accounting"]["black_holes"] == []
    out = orchestrator("workers", env={"FLEET_REDIS_URL": redis_url}).stdout
    assert "duplicates=1" in out and "BLACK HOLE" not in out


def test_a_lease_decides_duplicate_or_redelivery_atomically(redis_url: str) -> None:
    """The store's rule without workers: a live lease of another process makes a second delivery
    a duplicate; an expired or released one lets it take the job (a redelivery: the earlier
    delivery died, counted against its worker); renewing keeps only its owner's lease."""
    store = ResultStore(redis_url)
    job = {"run_id": "r", "job_id": "a@cpu", "family": "a", "device": "cpu", "queue": "cpu"}
    store.create_run({"run_id": "r", "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [job])
    one, two, three = (Taker("cpu", f"cpu@{n}", f"inst-{n}", 7) for n in ("one", "two", "three"))
    assert store.begin_delivery("r", "a@cpu", None, one) == (False, 1, True)
    assert store.begin_delivery("r", "a@cpu", None, two) == (True, 1, True)  # a duplicate: nothing to run
    assert store.ledger.renew_leases([("r", "a@cpu", one.owner), ("r", "a@cpu", two.owner)]) == 1
    assert store.ledger.run_counts("r")["cpu@two"] == {"received": 0, "finished": 0, "died": 0, "duplicate": 1}
    assert store.ledger.worker_stats()["cpu@two"]["duplicate"] == 1
    raw_redis(redis_url).delete(keys.lease("r", "a@cpu"))  # expired: one's process died and renews no more
    assert store.begin_delivery("r", "a@cpu", None, two) == (False, 2, False)  # a redelivery: taken
    assert store.ledger.started("r", "a@cpu", "cpu", two.worker, two.instance, 2) == "cpu@one"
    assert store.ledger.run_counts("r")["cpu@one"]["died"] == 1
    assert store.ledger.renew_leases([("r", "a@cpu", one.owner)]) == 0  # the old owner cannot take it back
    assert store.begin_delivery("r", "a@cpu", None, three) == (True, 2, True)  # two holds it now
    assert not store.ledger.release_lease("r", "a@cpu", one.owner)
    assert store.ledger.release_lease("r", "a@cpu", two.owner)  # two's process died: released
    assert store.begin_delivery("r", "a@cpu", None, three) == (False, 3, False)
    assert 0 < raw_redis(redis_url).pttl(keys.lease("r", "a@cpu")) <= 5000  # a lease never outlives its process by long


def test_renewing_a_lease_puts_back_the_unacked_entry_a_duplicates_ack_removed(redis_url: str) -> None:
    """A duplicate carries the running delivery's tag, and its acknowledgement removes kombu's
    unacked entry for that tag: the running job's message could no longer be restored if its
    process died (LOST). The lease's holder puts the entry back when it renews, only while it
    holds the lease and the job has no result; an entry still there is left as it is."""
    store, r = ResultStore(redis_url), raw_redis(redis_url)
    job = {"run_id": "r", "job_id": "a@cpu", "family": "a", "device": "cpu", "queue": "cpu"}
    store.create_run({"run_id": "r", "started_at": 1.0, "deadline": 2e9, "deadline_s": 60}, [job])
    one, two = (Taker("cpu", f"cpu@{n}", f"inst-{n}", 7) for n in ("one", "two"))
    entry = json.dumps([{"body": "b", "headers": {}, "properties": {"delivery_tag": "tag-1"}}, "", "cpu"])
    held, message = ("r", "a@cpu", one.owner), ("a@cpu", "tag-1", entry)
    assert store.begin_delivery("r", "a@cpu", None, one) == (False, 1, True)
    r.hset(keys.UNACKED, "tag-1", "kombu's own")
    assert store.ledger.renew_leases([held], [message]) == 1
    assert r.hget(keys.UNACKED, "tag-1") == "kombu's own"  # there: untouched
    r.hdel(keys.UNACKED, "tag-1")  # the duplicate's acknowledgement
    assert store.ledger.renew_leases([held], [message]) == 1
    assert r.hget(keys.UNACKED, "tag-1") == entry and r.zscore(keys.UNACKED_INDEX, "tag-1")
    assert store.transport.restore_unacked("tag-1")  # so the job can be put back on its queue
    assert r.llen("cpu") == 1 and not r.hexists(keys.UNACKED, "tag-1")
    r.delete("cpu")
    assert store.ledger.renew_leases([("r", "a@cpu", two.owner)], [message]) == 0  # not the holder
    assert not r.hexists(keys.UNACKED, "tag-1")
    r.hset(keys.run("r", "results"), "a@cpu", "{}")  # the job has its outcome: its ack follows
    assert store.ledger.renew_leases([held], [message]) == 1
    assert not r.hexists(keys.UNACKED, "tag-1")
