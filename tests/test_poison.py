"""Hostile messages against a real worker on a real Redis: raw kombu messages that used to
crash-loop or wedge a worker, job fields that named paths, and a fuzzer. Each ends with the
worker still up (same process), the bad message acknowledged (dead letter or a bad_job result,
never requeued) and a valid job sent after it completing."""

from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer

from fleet.broker import RUN_CHECK_TASK, make_app
from fleet.catalog import load_catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from orchestrator.runs import wait
from orchestrator.submit import plan_jobs, submit
from tests.helpers import orchestrator, raw_redis
from tests.test_faults import wait_until


def headers(**over: Any) -> dict[str, Any]:
    """The headers Celery's own producer sends (celery.app.amqp.as_task_v2), with changes."""
    base = {
        "lang": "py",
        "task": RUN_CHECK_TASK,
        "id": uuid.uuid4().hex,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": None,
        "parent_id": None,
        "argsrepr": "[job]",
        "kwargsrepr": "{}",
        "origin": "test",
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    base.update(over)
    return {k: v for k, v in base.items() if v != "<absent>"}


def publish(
    url: str, body: bytes | str, hdrs: Any, content_type: str = "application/json", encoding: str = "utf-8"
) -> None:
    """One raw message on the cpu queue, as anyone with access to Redis could send it."""
    with Connection(url) as conn:
        Producer(conn.channel()).publish(
            body.encode() if isinstance(body, str) else body,  # sent as given, whatever it claims to be
            exchange=Exchange("cpu"),
            routing_key="cpu",
            headers=hdrs,
            content_type=content_type,
            content_encoding=encoding,
            serializer=None,
        )


def settled(store: ResultStore) -> bool:
    """Nothing waiting and nothing held unacknowledged: every message was acknowledged."""
    return store.transport.queue_length("cpu") == 0 and raw_redis(store.url).hlen(keys.UNACKED) == 0


def assert_still_serving(store: ResultStore, url: str, worker: Any, pid: int) -> None:
    """The same worker process is up and a valid job sent now completes."""
    assert worker.proc.poll() is None and worker.celery_main().pid == pid
    run_id = submit(store, make_app(url), load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    assert wait(store, run_id) == {"SYNTHETIC": 1}
    assert worker.proc.poll() is None and worker.celery_main().pid == pid
    assert "Unrecoverable error" not in worker.log.read_text()
    assert len(store.registry.live_workers()) == 1


POISON = {
    "body an object": (json.dumps({"a": 1}), headers()),
    "body null": ("null", headers()),
    "body a string": (json.dumps("job"), headers()),
    "body a 2-list": (json.dumps([[{}], {}]), headers()),
    "body a 4-list": (json.dumps([[{}], {}, {}, {}]), headers()),
    "timelimit not a pair": (json.dumps([[{}], {}, {}]), headers(timelimit=5)),
    "timelimit of 3": (json.dumps([[{}], {}, {}]), headers(timelimit=[1, 2, 3])),
    "stamped_headers 5": (json.dumps([[{}], {}, {}]), headers(stamped_headers=5)),
    "no id": (json.dumps([[{}], {}, {}]), headers(id="<absent>")),
    "no task": (json.dumps([[{}], {}, {}]), headers(task="<absent>")),
    "task a list": (json.dumps([[{}], {}, {}]), headers(task=["x"])),
    "unknown task": (json.dumps([[{}], {}, {}]), headers(task="celery.chord_unlock")),
    "eta far away": (json.dumps([[{}], {}, {}]), headers(eta="2999-01-01T00:00:00")),
    "expires not a time": (json.dumps([[{}], {}, {}]), headers(expires=[1])),
    "a callback": (json.dumps([[{}], {}, {"callbacks": [{"task": "x"}]}]), headers()),
    "kwargs": (json.dumps([[], {"job": {}}, None]), headers()),
    "not JSON": ("{nope", headers()),
    "UTF-16": (json.dumps([[{}], {}, {}]).encode("utf-16"), headers()),
    "huge": (json.dumps([["x" * (2 << 20)], {}, None]), headers()),
}


def test_poison_messages_are_dead_lettered_and_the_worker_keeps_serving(redis_url: str, start_worker) -> None:
    w = start_worker(redis_url)
    store = ResultStore(redis_url)
    pid = w.celery_main().pid
    for body, hdrs in POISON.values():
        publish(redis_url, body, hdrs)
    publish(redis_url, b"\x80\x03}q\x00.", headers(), content_type="application/x-python-serialize", encoding="binary")
    wait_until(
        lambda: store.transport.dead_letter_count() == len(POISON) + 1, timeout=120, what="every message dead-lettered"
    )
    wait_until(lambda: settled(store), timeout=30, what="nothing requeued")
    letters = store.transport.dead_letters(100)
    assert len(letters) == len(POISON) + 1
    reasons = " | ".join(d["reason"] for d in letters)
    for word in (
        "not UTF-8",
        "[args, kwargs, embed]",
        "timelimit",
        "stamped_headers",
        "headers.id",
        "not a task",
        "eta",
        "expires",
    ):
        assert word in reasons, (word, reasons)
    assert "only application/json" in reasons and "at most" in reasons
    (name,) = [x["name"] for x in store.registry.live_workers()]
    assert all(d["worker"] == name and d["queue"] == "cpu" and len(d["body"]) <= 2048 for d in letters), letters
    assert_still_serving(store, redis_url, w, pid)
    listing = orchestrator("workers", "--redis-url", redis_url)
    assert f"dead letters: {len(POISON) + 1}" in listing.stdout, listing.stdout + listing.stderr


@pytest.mark.parametrize("corrupt", ["list of another type", "counter at its limit"])
def test_a_corrupt_dead_letter_key_never_stops_the_worker(redis_url: str, start_worker, corrupt: str) -> None:
    """Dead-lettering that Redis refuses (WRONGTYPE, INCR overflow) is logged; the message is still
    acknowledged, so no restarted worker meets it again."""
    w = start_worker(redis_url)
    store = ResultStore(redis_url)
    pid = w.celery_main().pid
    raw = raw_redis(redis_url)  # corrupted on purpose
    if corrupt == "list of another type":
        raw.sadd(keys.DEAD_LETTERS, "x")
    else:
        raw.set(keys.DEAD_LETTERS_COUNT, str(2**63 - 1))
    body, hdrs = POISON["unknown task"]
    publish(redis_url, body, hdrs)
    wait_until(lambda: "could not record the dead letter" in w.log.read_text(), timeout=60, what="the refusal logged")
    wait_until(lambda: settled(store), timeout=30, what="nothing requeued")
    assert_still_serving(store, redis_url, w, pid)


def _forged(run_id: str, name: str, **candidate: Any) -> dict[str, Any]:
    (job,) = plan_jobs(run_id, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    job["job_id"] = f"t5@cpu-{name}"
    job["family_spec"]["candidates"] = [{**dict.fromkeys(("id", "path", "revision", "gguf_file")), **candidate}]
    return job


def test_job_fields_are_not_paths_and_are_bounded(redis_url: str, start_worker, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    big = tmp_path / "big"
    big.write_bytes(b"\0" * (1 << 20))
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    w = start_worker(redis_url)
    store, app = ResultStore(redis_url), make_app(redis_url)
    pid = w.celery_main().pid
    run_id = submit(store, app, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    wait(store, run_id)
    forged = {
        "revision a directory": _forged(run_id, "dir", id="a/b", revision=str(tmp_path / "model")),
        "revision a big file": _forged(run_id, "big", id="a/b", revision=str(big)),
        "revision a pipe": _forged(run_id, "pipe", id="a/b", revision=str(pipe)),
        "revision climbing": _forged(run_id, "dots", id="a/b", revision="main/../../etc"),
        "revision too long": _forged(run_id, "long", id="a/b", revision="r" * 201),
        "gguf_file climbing": _forged(run_id, "gguf", path=str(tmp_path), gguf_file="../../../x.gguf"),
        "path too long": _forged(run_id, "path", path="/" + "p" * 5000),
        "id a path": _forged(run_id, "id", id="/etc/passwd"),
        "too many candidates": {
            **_forged(run_id, "many", id="a/b"),
        },
    }
    forged["too many candidates"]["family_spec"]["candidates"] *= 33
    raw = raw_redis(redis_url)  # the forged jobs are written into the run as a hostile sender would
    for job in forged.values():
        raw.hset(keys.run(run_id, "jobs"), job["job_id"], json.dumps(job))
    raw.delete(keys.run(run_id, "finished"))
    for job in forged.values():
        app.send_task(RUN_CHECK_TASK, args=[job], queue="cpu")
    ids = [j["job_id"] for j in forged.values()]
    wait_until(lambda: len(store.results_of([run_id], ids)[run_id]) == len(ids), timeout=90, what="refusals")
    results = store.results_of([run_id], ids)[run_id]
    for what, job in forged.items():
        result = results[job["job_id"]]
        assert result["status"] == "FAILED" and result["error"]["kind"] == "bad_job", (what, result)
        assert not result["attempts"], what  # refused before any candidate was looked at
    assert "revision" in results["t5@cpu-pipe"]["error"]["message"]
    assert "gguf_file" in results["t5@cpu-gguf"]["error"]["message"]
    assert "at most 32" in results["t5@cpu-many"]["error"]["message"]
    wait_until(lambda: settled(store), timeout=30, what="nothing requeued")
    # A 10 MB path never reaches the task: the message is over the size bound.
    publish(redis_url, json.dumps([[_forged(run_id, "huge", path="/" + "p" * (10 << 20))], {}, None]), headers())
    wait_until(lambda: store.transport.dead_letter_count() == 1, timeout=60, what="the oversized message dead-lettered")
    assert "at most" in store.transport.dead_letters(1)[0]["reason"]
    assert_still_serving(store, redis_url, w, pid)


# -- the fuzzer ----------------------------------------------------------------------------
def _value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "null", "list", "dict", "big"] if depth < 4 else ["int", "str", "null"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 1, 2**31, 2**63, rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e308, 3.0])
    if kind == "str":
        return rng.choice(["", "x", "../../etc/passwd", "/dev/zero", "\u0000", "é" * 10, uuid.uuid4().hex])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "big":
        return "b" * rng.choice([1000, 70_000, 300_000])
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["task", "id", "args", "kwargs", "run_id", "job_id", "family_spec", "candidates", "x"]
    return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _fuzz_message(rng: random.Random, job: dict[str, Any]) -> tuple[bytes | str, Any, str, str]:
    hdrs: Any = headers()
    for _ in range(rng.choice([0, 0, 0, 1, 2, 3])):  # a few header fields changed or removed
        key = rng.choice([*hdrs, "redelivered", "x"])
        if rng.random() < 0.3:
            hdrs.pop(key, None)
        else:
            hdrs[key] = _value(rng)
    shape = rng.random()
    if shape < 0.4:  # a well-formed body around a mangled job
        bad = json.loads(json.dumps(job))
        for _ in range(rng.randint(1, 3)):
            spec = bad["family_spec"]
            target = spec if isinstance(spec, dict) and spec and rng.random() < 0.5 else bad
            target[rng.choice(list(target))] = _value(rng)
        bad["run_id"] = rng.choice([5, None, [], {}])  # no result can name it: a dead letter
        body: bytes | str = json.dumps([[bad], {}, None])
    elif shape < 0.8:
        body = json.dumps(_value(rng))
    elif shape < 0.9:
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    else:
        body = json.dumps([_value(rng), _value(rng), _value(rng)])
    odd_types = ["application/x-python-serialize", "text/plain", "application/octet-stream", "application/x-yaml"]
    ctype = rng.choice(odd_types) if rng.random() < 0.1 else "application/json"
    encoding = rng.choice(["binary", "latin-1", "utf-16"]) if rng.random() < 0.1 else "utf-8"
    return body, hdrs, ctype, encoding


@pytest.mark.parametrize("seed", [20261204])
def test_fuzzed_messages_never_stop_a_worker(seed: int, redis_url: str, start_worker) -> None:
    w = start_worker(redis_url)
    store = ResultStore(redis_url)
    pid = w.celery_main().pid
    (job,) = plan_jobs("fuzz", load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    rng = random.Random(seed)
    n = 300
    for _ in range(n):
        publish(redis_url, *_fuzz_message(rng, job))
    # Every message is refused, and every refusal is kept: none can be run, none is requeued.
    wait_until(lambda: store.transport.dead_letter_count() == n, timeout=300, what=f"{n} dead letters")
    wait_until(lambda: settled(store), timeout=30, what="nothing requeued")
    assert_still_serving(store, redis_url, w, pid)


def test_an_expired_copy_pushed_first_does_not_discard_the_runs_own_message(redis_url: str, start_worker) -> None:  # type: ignore[no-untyped-def]
    """Rule: a message can discard only itself. Celery's expiry check added an expired message's
    task id to the worker's revoked ids, so a copy of a queued job with `expires` in the past,
    taken first, made the run's own message of that job be discarded unrun (LOST at the
    deadline). Here two such copies (one with a time zone, one without) are taken first."""
    store = ResultStore(redis_url)
    run_id = submit(store, make_app(redis_url), load_catalog(), ["minilm"], ["cpu"], RunSettings(repeats=1))
    r = raw_redis(redis_url)
    (raw,) = r.lrange("cpu", 0, -1)
    for expires in ("2000-01-01T00:00:00+00:00", "2000-01-01T00:00:00"):
        copy = json.loads(raw)
        copy["headers"]["expires"] = expires
        copy["properties"]["delivery_tag"] = str(uuid.uuid4())
        r.rpush("cpu", json.dumps(copy))  # consumers pop from this end: taken before the run's own
    start_worker(redis_url, "w1")
    wait_until(lambda: store.results(run_id), timeout=240, what="the job's result")
    (result,) = store.results(run_id)
    assert result["status"] == "REAL", result.get("error")
