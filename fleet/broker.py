"""The Celery application shared by the orchestrator (which sends tasks by name) and workers.

Only JSON crosses the broker. Jobs are acknowledged late so that a job whose worker dies is
delivered again; results go to our own store (fleet.store), not Celery's backend.

`app` below is a torch-free application for Celery's own tools:
`celery -A fleet.broker inspect ping`, `celery -A fleet.broker events`, Flower. It reads
$FLEET_REDIS_URL when first used, not at import.
"""

from __future__ import annotations

import functools
import logging
import ssl
from typing import Any

from celery import Celery
from kombu.entity import Queue

from fleet.devices import QUEUES
from fleet.settings import Settings

RUN_CHECK_TASK = "fleet.run_check"
# kombu's Redis transport, screening every queue entry before kombu decodes it (fleet.redis_transport).
TRANSPORT = "fleet.redis_transport:Transport"


def config(settings: Settings) -> dict[str, Any]:
    """Celery configuration for these settings."""
    url = settings.redis_url
    visibility = settings.visibility_timeout_s
    transport_options = {
        "visibility_timeout": visibility,
        # Sweep for messages of dead workers every interval (default sweep: 10 x 10 s).
        "unacked_restore_interval": max(1, min(10, visibility // 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        # No retry_on_timeout (nor retry/retry_on_error): a pipeline retried by redis-py could
        # run twice (orchestrator.publish pipelines a submit's messages on this client; kombu
        # turns its own publish batches off then). A command that times out raises instead:
        # workers reconnect (broker_connection_max_retries), and orchestrator.submit rides out
        # a restart itself.
    }
    ssl_options: dict[str, Any] | None = None
    if url.startswith("rediss://"):
        # TLS: verify against the system CA bundle, or FLEET_REDIS_CA when given.
        ssl_options = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if settings.redis_ca:
            ssl_options["ssl_ca_certs"] = settings.redis_ca
    return {
        "broker_url": url,
        "broker_transport": TRANSPORT,  # redis:// and rediss:// alike (TLS: broker_use_ssl)
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_queues": tuple(Queue(q) for q in QUEUES),  # type: ignore[no-untyped-call]
        "task_default_queue": QUEUES[0],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_ignore_result": True,
        "task_track_started": False,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        # Task events (received, started, succeeded, ...) and the sent event from the publisher, for
        # `celery events`, Flower and celery-exporter; JSON like every other message.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_heartbeat": 0,
        "broker_use_ssl": ssl_options,
        "redis_backend_use_ssl": ssl_options,
        "enable_utc": True,
        "timezone": "UTC",
    }


def make_app(redis_url: str | None = None, settings: Settings | None = None) -> Celery:
    """A Celery app for these settings (default: the environment's), on redis_url when given."""
    settings = (settings or Settings.from_env()).with_redis_url(redis_url)
    app = Celery("model_fleet", set_as_current=False)
    app.conf.update(config(settings))
    return app


def lazy_app() -> Celery:
    """An app configured from the environment the first time its configuration is read."""
    app = Celery("model_fleet")
    app.add_defaults(lambda: config(Settings.from_env()))
    return app


app = lazy_app()


# Inspect commands that are not read-only for the worker (objgraph writes a file and walks every
# object of the process; memdump and memsample run the garbage collector's census in the consumer).
HEAVY_INSPECT = ("objgraph", "memdump", "memsample")


def refuse_remote_control() -> list[str]:
    """In this process's Celery registry (celery.worker.control.Panel, the handlers of a worker's
    pidbox node), replace every remote-control command that changes what a worker does with a
    refusal, keeping the read-only inspect commands. Remote control arrives by PUBLISH, which
    anyone who can write to Redis can send: `cancel_consumer` made a worker stop taking jobs
    while its heartbeat still said consuming. The fleet sends none of them. Every worker (fleet
    workers, the beat's control worker) calls it before it starts. Returns the commands refused."""
    from celery.worker.control import Panel

    dropped = [
        name for name, meta in Panel.meta.items() if getattr(meta, "type", None) != "inspect" or name in HEAVY_INSPECT
    ]
    for name in dropped:
        Panel.data[name] = functools.partial(_refused, name)
    return sorted(dropped)


def _refused(name: str, state: Any, **arguments: Any) -> dict[str, str]:
    logging.getLogger("fleet.control").warning("refused the remote-control command %r", name[:64])
    return {"error": f"{name} refused: a model-fleet worker answers only read-only inspect commands"}
