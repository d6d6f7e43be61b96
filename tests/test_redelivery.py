"""A running job is never delivered twice, whatever happens to Redis; a dead worker's job is.

The observation rule (fleet.redelivery.OrphanWatch) is checked on its own with a clock we step,
and end to end: a Redis outage longer than every heartbeat's lifetime while jobs run, with a
second, idle worker watching for orphans when Redis comes back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fleet.broker import make_app
from fleet.redelivery import MAX_CHECK_GAP_S, ORPHAN_CONFIRM_S, OrphanWatch, restore_orphans
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from fleet.timing import WORKER_TTL_S
from orchestrator.redis_server import RedisServer
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.helpers import raw_redis
from tests.test_faults import catalog_of, wait_until


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_orphan_is_confirmed_only_after_unbroken_observation() -> None:
    clock = Clock()
    watch = OrphanWatch(clock)
    assert watch.confirmed(["a"]) == []
    for _ in range(3):  # checks 10 s apart, as the heartbeat loop makes them
        clock.t += 10
        watch.confirmed(["a"])
    assert clock.t - 1000 >= ORPHAN_CONFIRM_S
    assert watch.confirmed(["a"]) == ["a"]


def test_an_outage_restarts_the_observation() -> None:
    clock = Clock()
    watch = OrphanWatch(clock)
    watch.confirmed(["a"])
    clock.t += 20
    watch.lost_contact()  # a check that Redis did not answer
    clock.t += 10
    assert watch.confirmed(["a"]) == []  # observed afresh from here
    for _ in range(2):
        clock.t += 10
        assert watch.confirmed(["a"]) == []  # 10, then 20 s of contact: not yet
    clock.t += 10
    assert watch.confirmed(["a"]) == ["a"]


def test_checks_too_far_apart_are_not_an_observation() -> None:
    clock = Clock()
    watch = OrphanWatch(clock)
    watch.confirmed(["a"])
    clock.t += MAX_CHECK_GAP_S + 1  # the observer itself was stopped (SIGSTOP, a suspended laptop)
    assert watch.confirmed(["a"]) == []


def test_a_holder_seen_alive_again_is_forgotten() -> None:
    clock = Clock()
    watch = OrphanWatch(clock)
    watch.confirmed(["a", "b"])
    clock.t += 10
    watch.confirmed(["b"])  # a's worker wrote its heartbeat again
    for _ in range(2):
        clock.t += 10
        watch.confirmed(["a", "b"])
    assert watch.confirmed(["a", "b"]) == ["b"]  # b: 30 s unbroken; a: 20 s since seen orphaned again


@pytest.mark.slow
def test_redis_outage_longer_than_the_heartbeats_runs_each_job_once(tmp_path: Path, start_worker) -> None:
    """Redis down 45 s (SIGKILL, restarted from its AOF) while three 120 s jobs run on worker a;
    worker b, idle, sees every heartbeat of a expired when Redis returns, and the messages a holds
    were delivered more than a heartbeat's lifetime ago. Each job runs once, on a."""
    jobs, outage_s = 3, 45.0
    assert outage_s > WORKER_TTL_S  # every heartbeat expires during the outage
    server = RedisServer(tmp_path / "redis").start()
    try:
        url = server.url
        env = {"FLEET_TEST_SLOW_S": "120"}
        start_worker(url, name="a", concurrency=jobs, **env)
        store = ResultStore(url)
        run_id = submit(store, make_app(url), catalog_of("slow", n=jobs), None, ["cpu"], RunSettings(repeats=1))
        wait_until(lambda: len(store.attempts(run_id)) == jobs, timeout=90, what="all jobs started on a")
        b = start_worker(url, name="b", **env)
        server.stop(kill=True)
        time.sleep(outage_s)
        server.start()
        counts = wait(store, run_id)
        assert counts == {"SYNTHETIC": jobs}
        results = store.results(run_id)
        assert {r["worker"] for r in results} == {"cpu@a"}
        assert [r["delivery"] for r in results] == [1] * jobs
        assert set(store.attempts(run_id).values()) == {1}
        assert "fleet.run_check[" not in b.log.read_text()  # b never received a job
    finally:
        server.stop()


def test_every_message_a_worker_holds_is_recorded_with_its_unacked_entry(redis_url: str, start_worker) -> None:
    """The held-delivery record (fleet.redelivery reads it) is written in the transaction in
    which kombu records the message as unacknowledged (fleet.redis_transport.QoS): whenever a
    message is in kombu's unacked hash, its record names the worker start holding it."""
    start_worker(redis_url, name="h1", FLEET_TEST_SLOW_S="3")
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), catalog_of("slow", n=2), None, ["cpu"], RunSettings(repeats=1))
    instance = next(w["instance"] for w in store.registry.live_workers() if w.get("name") == "cpu@h1")
    seen: set[str] = set()
    while store.result_count(run_id) < 2:
        pipe = raw_redis(redis_url).pipeline(transaction=True)  # both read at one instant
        pipe.hkeys(keys.UNACKED)
        pipe.hgetall(keys.HELD)
        unacked, held = pipe.execute()
        for tag in unacked:
            assert held.get(tag) == instance, f"message {tag} is unacknowledged without its held record"
            seen.add(tag)
        time.sleep(0.05)
    assert len(seen) == 2  # both messages were seen held while their jobs ran


def test_unacked_entries_that_are_not_messages_are_dead_lettered_not_raised(redis_url: str) -> None:
    """Rule: the restore of orphaned messages never raises on what kombu's unacked hash holds.
    An entry that is not [message object, exchange, a fleet queue] is removed with its records and
    dead-lettered; the sound orphans beside it are still restored (every worker's heartbeat loop
    runs this check: one raise there stopped its heartbeat for good)."""
    store = ResultStore(redis_url)
    r = raw_redis(redis_url)
    r.rpush("fleet:run:x:late", "a")  # a fleet list a routing key may name: not a queue
    bad = {
        "dict-entry": json.dumps({"message": {}, "routing_key": "cpu"}),
        "info-text": json.dumps([{"properties": {"delivery_info": "x"}}, "", "cpu"]),
        "record-key": json.dumps([{"body": "e30="}, "", "fleet:run:x:late"]),
        "deep": "[" * 3000 + "]" * 3000,
        "number-key": json.dumps([{}, "", 7]),
    }
    good = json.dumps([{"body": "e30=", "headers": {}, "properties": {"delivery_info": {}}}, "", "cpu"])
    entries = {**bad, "good": good}
    r.hset(keys.UNACKED, mapping=entries)
    r.zadd(keys.UNACKED_INDEX, dict.fromkeys(entries, time.time() - 10 * WORKER_TTL_S))
    r.hset(keys.HELD, mapping=dict.fromkeys(entries, "a-dead-instance"))
    clock = Clock()
    watch = OrphanWatch(clock)
    assert restore_orphans(store, watch) == 0
    while clock.t < 1000 + ORPHAN_CONFIRM_S:  # observed without a break (checks 10 s apart)
        clock.t += 10
        restored = restore_orphans(store, watch)
    assert restored == 1
    assert r.hlen(keys.UNACKED) == 0 and r.hlen(keys.HELD) == 0 and r.zcard(keys.UNACKED_INDEX) == 0
    assert [json.loads(m)["headers"] for m in r.lrange("cpu", 0, -1)] == [{"redelivered": True}]
    assert r.lrange("fleet:run:x:late", 0, -1) == ["a"]
    letters = store.transport.dead_letters(limit=10)
    assert sorted(d["delivery_tag"] for d in letters) == sorted(bad)
    assert all(d["reason"].startswith("an unacknowledged message could not be restored") for d in letters)
