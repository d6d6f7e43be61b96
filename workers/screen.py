"""A consumer bootstep that screens every task message before Celery's own machinery sees it.

Celery's consumer builds its message callback in `Consumer.create_task_handler()` (called by
the event loop, celery.worker.loops, on every (re)connection). That callback reads the headers,
looks up the task's strategy (celery.worker.strategy.default), and the strategy builds a
Request (celery.worker.request), which unpacks the body and the headers. An exception there
is not caught: the worker exits with "Unrecoverable error", or its consumer restarts forever,
and the unacknowledged message comes back to the next worker.

ScreenMessages wraps that callback: each message is checked first (fleet.messages); one with a
problem is acknowledged into the dead-letter list (fleet.store) with the reason and never
reaches Celery; so is one whose check itself raises. Anything the wrapped callback still
raises (other than a broker connection error, which Celery handles by reconnecting)
dead-letters the message the same way instead of stopping the consumer.

Remote control (Celery's broadcast commands, which arrive by PUBLISH on the worker's pidbox)
is anyone's who can write to Redis, so a worker answers only the read-only ones
(fleet.broker.refuse_remote_control()): `celery inspect ping|active|stats|active_queues|...` work, while
`cancel_consumer` (the worker stops taking jobs and still looks live), `rate_limit`,
`time_limit`, `revoke`, `terminate`, `pool_*`, `autoscale`, `add_consumer` and `shutdown`
answer that they are refused. The fleet itself sends none of them.

It also tells whether the consumer is really consuming (consuming()): the heartbeat is not
written while the consumer is down or restarting again and again, so such a worker is not
listed as live.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from celery import bootsteps

from fleet.broker import RUN_CHECK_TASK
from fleet.messages import message_problem
from fleet.store import ResultStore

logger = logging.getLogger("fleet.worker.screen")
# The tasks a worker accepts, with how many positional arguments each takes.
TASKS = {RUN_CHECK_TASK: 1}
FLAPPING = (3, 60.0)  # this many consumer starts within this many seconds: not consuming
_state: dict[str, Any] = {"consumer": None, "starts": deque(maxlen=FLAPPING[0])}


def consuming() -> bool:
    """Whether this worker's consumer is up and not restarting over and over."""
    consumer, starts = _state["consumer"], _state["starts"]
    if consumer is None or getattr(consumer.blueprint, "state", None) != bootsteps.RUN:
        return False
    return not (len(starts) == starts.maxlen and time.monotonic() - starts[0] < FLAPPING[1])


def describe(message: Any) -> dict[str, Any]:
    """What a dead letter keeps of a message: where it came from and its (truncated) raw body."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    body = message.body
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else str(body)
    return {
        "queue": (message.delivery_info or {}).get("routing_key"),
        "task": str(headers.get("task"))[:255],
        "id": str(headers.get("id"))[:255],
        "content_type": str(message.content_type)[:255],
        "headers": repr(message.headers)[:2048],
        "body_bytes": len(body) if isinstance(body, (bytes, bytearray, str)) else None,
        "body": text[:2048],
    }


class ScreenMessages(bootsteps.StartStopStep):
    """Consumer bootstep (after Tasks): wraps the task handler; see the module's docstring."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        _state["consumer"] = c
        original: Callable[..., Callable[[Any], Any]] = c.create_task_handler

        def create_task_handler(*args: Any, **kw: Any) -> Callable[[Any], Any]:
            return _screened(c, original(*args, **kw))

        c.create_task_handler = create_task_handler

    def start(self, c: Any) -> None:
        _state["starts"].append(time.monotonic())


def _screened(c: Any, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    from workers.app import settings, store  # the worker's own store (workers.app imports this module)
    from workers.core import worker_name

    def on_task_received(message: Any) -> Any:
        try:  # the check itself must never stop the consumer either
            problem = message_problem(
                message.headers, message.body, message.content_type, message.content_encoding, TASKS
            )
        except Exception as exc:
            logger.exception("could not check a message")
            problem = f"the message could not be checked: {exc!r}"[:2048]
        if problem:
            return _dead_letter(store(), worker_name(settings()), message, problem)
        try:
            return handler(message)
        except tuple(c.connection_errors) + tuple(c.channel_errors):
            raise  # Celery reconnects; the message comes back after the visibility timeout
        except Exception as exc:  # any other error would stop the consumer
            logger.exception("Celery could not take a message")
            if getattr(message, "acknowledged", False):
                return None
            return _dead_letter(store(), worker_name(settings()), message, f"Celery refused it: {exc!r}")

    return on_task_received


def _dead_letter(s: ResultStore, worker: str | None, message: Any, reason: str) -> None:
    """Keep the message in the dead-letter list, then acknowledge it (never requeued)."""
    logger.error("dead-lettered a message: %s", reason)
    try:
        s.retrying(lambda: s.transport.dead_letter(reason, {**describe(message), "worker": worker}), timeout_s=10)
    except Exception as exc:  # Redis away, or a dead-letter key of another type: never stop the consumer
        logger.error("could not record the dead letter (%r); the message is dropped: %s", exc, reason)
    message.ack()
