"""Publishing a run's jobs as Celery protocol-2 messages, each built from one template per run.

`app.send_task` builds every message afresh: it routes, merges options, builds the headers, serialises
the body through kombu, encodes it, wraps it in kombu's envelope, dumps that, and does all of it again
for the `task-sent` event (about 0.3 ms of CPU per job on the development machine, most of a submit).
The messages of one run differ only in the job, the task id, the delivery tag, the time limits and the
remaining time to the run's deadline. So Celery's own builder (`app.amqp.as_task_v2`) makes the
headers and properties once per run, and each job gets a copy with its own values: one JSON encoding
of the job (shared with the run's record), base64 (kombu's body encoding for Redis), one JSON
encoding of the envelope's small part. A pipeline of PUBLISH_BATCH jobs is one LPUSH of their
messages (the same order as one LPUSH each) and one EVAL that PUBLISHes their `task-sent` events
on kombu's topic, one round trip, on the Redis client of kombu's channel (its TLS, timeouts and
key prefix), with no retry inside redis-py: orchestrator.submit republishes what did not arrive.

What the queue then holds is what send_task would have written (tests/test_submit_messages.py
compares the two field by field): the envelope fleet.envelopes checks, the task message
fleet.messages checks, consumed by a stock Celery worker. Not sent: Celery's
before/after_task_publish signals (nothing of the fleet listens to them for jobs).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset
from kombu.common import maybe_declare
from kombu.entity import maybe_delivery_mode

from fleet.broker import RUN_CHECK_TASK
from fleet.errors import FleetError
from fleet.protocol import Job, now
from fleet.timing import hard_time_limit

PUBLISH_ALL = "for i = 2, #ARGV do redis.call('PUBLISH', ARGV[1], ARGV[i]) end"  # ARGV: topic, messages
PUBLISH_BATCH = 200  # jobs per Redis pipeline: one LPUSH of their messages, one EVAL of PUBLISH_ALL for their events
CONTENT_TYPE = "application/json"
ENCODING = "utf-8"
BODY_ENCODING = "base64"  # kombu's Redis channels encode every body so
_EMBED = json.dumps({"callbacks": None, "errbacks": None, "chain": None, "chord": None})  # jobs chain nothing
_dumps = json.JSONEncoder().encode  # what kombu's json serializer writes for plain JSON data


def argsrepr(job: Job) -> str:
    """What Celery logs and events show for the job, instead of repr() of all of it."""
    return f"[{job['job_id']} of {job['run_id']}]"


def uuid4s(n: int) -> list[str]:
    """n random (version 4) UUIDs as text, from one read of the system's random source: what
    uuid.uuid4() gives, without building a UUID object for each."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes((b & 0x0F) | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes((b & 0x3F) | 0x80 for b in raw[8::16])  # RFC 4122 variant
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def _envelope(body: str, rest: dict[str, Any]) -> bytes:
    """kombu's envelope as JSON: the body base64-encoded, first; then the rest. Base64 needs no
    JSON escaping, so the long part is never scanned by the encoder."""
    encoded = base64.b64encode(body.encode(ENCODING)).decode("ascii")
    return ('{"body": "' + encoded + '", ' + _dumps(rest)[1:]).encode(ENCODING)


class RunMessages:
    """The messages of one run, from a template Celery built (see the module's docstring)."""

    def __init__(self, app: Celery, expires: datetime, channel: Any) -> None:
        proto = app.amqp.as_task_v2(
            "?",
            RUN_CHECK_TASK,
            args=[None],
            kwargs={},
            expires=expires,
            reply_to=app.thread_oid,
            ignore_result=True,  # results go to the fleet's store, not a Celery result channel
            argsrepr="",
            kwargsrepr="{}",
            create_sent_event=bool(app.conf.task_send_sent_event),
        )
        self.headers: dict[str, Any] = proto.headers
        self.properties: dict[str, Any] = {
            **proto.properties,
            "argsrepr": "",
            "kwargsrepr": "{}",
            "delivery_mode": maybe_delivery_mode(app.conf.task_default_delivery_mode),  # type: ignore[no-untyped-call]
        }
        self.expires_at = expires.timestamp()
        self.sent_event: dict[str, Any] | None = proto.sent_event
        self.event_exchange = str(app.conf.event_exchange)
        # the topic kombu's fanout exchange publishes `task-sent` on (its prefix and patterns)
        # (and kombu's global key prefix, which its client adds to a PUBLISH but not to our EVAL)
        topic = channel._get_publish_topic(self.event_exchange, "task.sent")
        self.event_topic: str = (getattr(channel, "global_keyprefix", "") or "") + topic
        self.hostname = anon_nodename()
        self.pid = os.getpid()
        self.clock = app.clock

    def task(self, job: Job, encoded: str, task_id: str, tag: str) -> bytes:
        """The queue entry (kombu's envelope, JSON) for this job; encoded: the job as JSON."""
        limit = job["time_limit_s"]
        shown = argsrepr(job)
        queue = job["queue"]
        # the job with the time it is sent (its queue wait, orchestrator.accounting), as JSON
        sent = encoded[:-1] + ', "sent_at": ' + repr(now()) + "}"
        left_ms = max(0, int((self.expires_at - time.time()) * 1000))  # what kombu makes of `expires`
        return _envelope(
            "[[" + sent + "], {}, " + _EMBED + "]",
            {
                "content-encoding": ENCODING,
                "content-type": CONTENT_TYPE,
                "headers": {
                    **self.headers,
                    "id": task_id,
                    "root_id": task_id,
                    "timelimit": [hard_time_limit(limit), limit],
                    "argsrepr": shown,
                },
                "properties": {
                    **self.properties,
                    "correlation_id": task_id,
                    "argsrepr": shown,
                    "expiration": str(left_ms),
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "priority": 0,
                    "body_encoding": BODY_ENCODING,
                    "delivery_tag": tag,
                },
            },
        )

    def event(self, job: Job, task_id: str, tag: str) -> bytes | None:
        """The `task-sent` event for a task (Flower, `celery events`), or None when they are off."""
        if self.sent_event is None:
            return None
        queue = job["queue"]
        body = {
            "hostname": self.hostname,
            "utcoffset": utcoffset(),
            "pid": self.pid,
            "clock": self.clock.forward(),
            **self.sent_event,
            "uuid": task_id,
            "root_id": task_id,
            "args": argsrepr(job),
            "queue": queue,
            "exchange": "",
            "routing_key": queue,
            "timestamp": time.time(),
            "type": "task-sent",
        }
        return _envelope(
            _dumps(body),
            {
                "content-encoding": ENCODING,
                "content-type": CONTENT_TYPE,
                "headers": {"hostname": self.hostname},
                "properties": {
                    "delivery_mode": 1,  # celery.events.Dispatcher's: events are transient
                    "delivery_info": {"exchange": self.event_exchange, "routing_key": "task.sent"},
                    "priority": 0,
                    "body_encoding": BODY_ENCODING,
                    "delivery_tag": tag,
                },
            },
        )


@contextmanager
def _channel(app: Celery) -> Iterator[Any]:
    with app.connection_for_write() as conn:
        yield conn.default_channel


def publish(app: Celery, jobs: Sequence[Job], expires: datetime, encoded: Mapping[str, str]) -> None:
    """Queue every job (each on its own queue, in this order) over one connection, PUBLISH_BATCH
    jobs per pipeline; each queue declared once. encoded: job id -> the job as JSON. Raises what
    redis-py or kombu raise (nothing is retried here)."""
    with _channel(app) as channel:
        messages = RunMessages(app, expires, channel)
        for queue in dict.fromkeys(job["queue"] for job in jobs):
            entity = app.amqp.queues[queue]
            if entity.exchange.type != "direct":
                raise FleetError(f"queue {queue!r} is bound to a {entity.exchange.type} exchange; jobs go direct")
            maybe_declare(entity, channel)  # type: ignore[no-untyped-call]
        with channel.conn_or_acquire() as client:
            for start in range(0, len(jobs), PUBLISH_BATCH):
                _publish_batch(client, messages, jobs[start : start + PUBLISH_BATCH], encoded)


def _publish_batch(client: Any, messages: RunMessages, jobs: Sequence[Job], encoded: Mapping[str, str]) -> None:
    ids = uuid4s(3 * len(jobs))  # a task id, the task's delivery tag, the event's delivery tag
    entries: dict[str, list[bytes]] = {}
    events: list[bytes] = []
    for i, job in enumerate(jobs):
        task_id = ids[3 * i]
        entries.setdefault(job["queue"], []).append(messages.task(job, encoded[job["job_id"]], task_id, ids[3 * i + 1]))
        event = messages.event(job, task_id, ids[3 * i + 2])
        if event is not None:
            events.append(event)
    pipe = client.pipeline(transaction=False)
    for queue, queued in entries.items():
        pipe.lpush(queue, *queued)  # one LPUSH of many values: the order of one LPUSH each
    if events:  # one command for them all, not a PUBLISH (and a reply to parse) each
        pipe.eval(PUBLISH_ALL, 0, messages.event_topic, *events)
    pipe.execute()
