"""A message nested a few hundred levels deep (headers or body) is dead-lettered before Celery sees
it: Celery pickles both to hand the task to a pool process, and the RecursionError that raised
there (after the pool's slot was taken) left the worker holding its next message for ever."""

from __future__ import annotations

import base64
import json

from fleet.messages import MAX_DEPTH, message_problem
from fleet.store import ResultStore, keys
from tests.helpers import raw_redis
from tests.test_faults import wait_until

TASKS = {"fleet.run_check": 1}


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _headers(**extra: object) -> dict:
    return {"lang": "py", "task": "fleet.run_check", "id": "t-1", "root_id": "t-1", **extra}


def _entry(headers: dict, body: object, tag: str) -> str:
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "delivery_tag": tag,
                "delivery_info": {"exchange": "", "routing_key": "cpu"},
                "priority": 0,
                "body_encoding": "base64",
            },
        }
    )


def test_headers_or_a_body_nested_deeper_than_the_limit_are_refused() -> None:
    ok_body = json.dumps([[{"family_spec": {"candidates": [{"id": "a"}]}, "pins": [{"logits": [[1.0]]}]}], {}, None])
    assert message_problem(_headers(), ok_body, "application/json", "utf-8", TASKS) is None
    deep = _headers(x=_nested(MAX_DEPTH))  # the headers object is one level more
    assert message_problem(deep, ok_body, "application/json", "utf-8", TASKS) == (
        f"headers nest deeper than {MAX_DEPTH} levels"
    )
    body = json.dumps([[{"x": _nested(500)}], {}, None])
    assert message_problem(_headers(), body, "application/json", "utf-8", TASKS) == (
        f"the body nests deeper than {MAX_DEPTH} levels"
    )


def test_a_deeply_nested_message_never_takes_a_workers_slot(redis_url: str, start_worker) -> None:
    start_worker(redis_url, name="deep")
    r, store = raw_redis(redis_url), ResultStore(redis_url)
    job = {"run_id": "no-such-run", "job_id": "a@cpu", "family": "a", "device": "cpu", "queue": "cpu"}
    # BRPOP takes the oldest first: the deep message, then one the worker answers at once (a run
    # that is gone: nothing to run), which a leaked pool slot kept unacknowledged for ever.
    r.lpush("cpu", _entry(_headers(x=_nested(500)), [[job], {}, None], "tag-deep"))
    r.lpush("cpu", _entry(_headers(id="t-2", root_id="t-2"), [[job], {}, None], "tag-next"))
    wait_until(lambda: r.llen("cpu") == 0 and r.hlen(keys.UNACKED) == 0, timeout=60, what="both messages answered")
    reasons = [d["reason"] for d in store.transport.dead_letters()]
    assert reasons == [f"headers nest deeper than {MAX_DEPTH} levels"]
