"""The messages a submit writes (orchestrator.publish builds them from one template per run)
are the ones Celery's own send_task writes for the same job: the same envelope, headers,
properties, body and `task-sent` event, field by field, apart from what is new per message
(ids, delivery tags, clocks, times). And they pass the worker's own screening."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from fleet.broker import RUN_CHECK_TASK, make_app
from fleet.catalog import load_catalog
from fleet.envelopes import entry_problem
from fleet.messages import message_problem
from fleet.protocol import Job, now
from fleet.settings import RunSettings
from fleet.timing import hard_time_limit
from orchestrator.publish import PUBLISH_BATCH, argsrepr, publish
from orchestrator.submit import plan_jobs

FRESH = "<new per message>"


def send_task(app: Any, job: Job, expires: datetime) -> None:
    """The job sent the way a submit sent it before orchestrator.publish: Celery's send_task."""
    with app.producer_or_acquire() as producer:
        app.send_task(
            RUN_CHECK_TASK,
            args=[{**job, "sent_at": now()}],
            queue=job["queue"],
            soft_time_limit=job["time_limit_s"],
            time_limit=hard_time_limit(job["time_limit_s"]),
            expires=expires,
            producer=producer,
            argsrepr=argsrepr(job),
            kwargsrepr="{}",
            retry=False,
            ignore_result=True,
        )


def decoded(raw: bytes) -> dict[str, Any]:
    """A queue entry or event with its body decoded and what is new per message blanked out."""
    entry = json.loads(raw)
    body = json.loads(base64.b64decode(entry["body"]))
    props = entry["properties"]
    props["delivery_tag"] = FRESH
    if "correlation_id" in props:  # a task: its id, its sending time, its time left
        props["correlation_id"] = FRESH
        entry["headers"].update(id=FRESH, root_id=FRESH)
        assert abs(body[0][0].pop("sent_at") - time.time()) < 60
        assert 0 < int(props.pop("expiration")) <= 3600_000
    else:  # a task-sent event
        assert isinstance(body.pop("clock"), int) and abs(body.pop("timestamp") - time.time()) < 60
        body.update(uuid=FRESH, root_id=FRESH)
    entry["body"] = body
    return entry


def test_a_published_job_is_the_message_send_task_writes_and_passes_the_screening(redis_url: str) -> None:
    app = make_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    events = client.pubsub()
    events.psubscribe("*celeryev*")
    assert events.get_message(timeout=5)["type"] == "psubscribe"  # type: ignore[index]
    job = plan_jobs("run-1", load_catalog(), ["t5"], ["cpu"], RunSettings())[0]
    expires = datetime.now(UTC) + timedelta(hours=1)

    send_task(app, job, expires)
    publish(app, [job], expires, {job["job_id"]: json.dumps(job)})

    theirs_raw, ours_raw = reversed(client.lrange("cpu", 0, -1))  # LPUSH: the first sent is last
    for raw in (theirs_raw, ours_raw):
        assert entry_problem(raw) is None
        entry = json.loads(raw)
        body = base64.b64decode(entry["body"])
        problem = message_problem(
            entry["headers"], body, entry["content-type"], entry["content-encoding"], {RUN_CHECK_TASK: 1}
        )
        assert problem is None
    theirs, ours = decoded(theirs_raw), decoded(ours_raw)
    assert list(ours) == list(theirs)  # the envelope's fields in kombu's order
    assert ours["headers"] == theirs["headers"]
    assert ours["properties"] == theirs["properties"]
    assert ours == theirs
    assert ours["body"][0][0]["job_id"] == job["job_id"]

    sent = [events.get_message(timeout=5) for _ in range(2)]
    assert [m["type"] for m in sent if m] == ["pmessage", "pmessage"], sent
    assert sent[0]["channel"] == sent[1]["channel"]  # type: ignore[index]
    their_event, our_event = (decoded(m["data"]) for m in sent)  # type: ignore[index]
    assert our_event == their_event
    assert our_event["body"]["type"] == "task-sent" and our_event["body"]["queue"] == "cpu"


def test_jobs_are_queued_in_their_order_across_pipelines_and_queues(redis_url: str) -> None:
    app = make_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    jobs = plan_jobs("run-2", load_catalog(), None, ["cpu", "cuda"], RunSettings())
    jobs = [{**j, "job_id": f"{j['job_id']}-{i}"} for i in range(PUBLISH_BATCH) for j in jobs]  # type: ignore[misc]
    publish(app, jobs, datetime.now(UTC) + timedelta(hours=1), {j["job_id"]: json.dumps(j) for j in jobs})

    for queue in ("cpu", "cuda"):
        consumed = [
            json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]["job_id"]
            for raw in reversed(client.lrange(queue, 0, -1))
        ]
        assert consumed == [j["job_id"] for j in jobs if j["queue"] == queue]  # BRPOP takes them in this order
