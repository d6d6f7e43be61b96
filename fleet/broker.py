"""The Celery application shared by the orchestrator (which sends tasks by name) and workers.

Only JSON crosses the broker. Jobs are acknowledged late so that a job whose worker dies is
delivered again; results go to our own store (fleet.store), not Celery's backend.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from fleet import settings

RUN_CHECK_TASK = "fleet.run_check"
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
# Above the hardest time limit a job can have, or a long job would be delivered twice.
VISIBILITY_TIMEOUT_S = int(os.environ.get("FLEET_VISIBILITY_TIMEOUT", "3900"))


def queue_for(device: str) -> str:
    """cpu jobs go to 'cpu'; cuda and cuda:N jobs to 'gpu' (served by one worker per GPU)."""
    return CPU_QUEUE if device == "cpu" else GPU_QUEUE


def make_app(redis_url: str | None = None) -> Celery:
    url = settings.redis_url(redis_url)
    app = Celery("model_fleet", broker=url, backend=url)
    transport_options = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        # Sweep for messages of dead workers every interval (default sweep: 10 x 10 s).
        "unacked_restore_interval": max(1, min(10, VISIBILITY_TIMEOUT_S // 4)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "retry_on_timeout": True,
    }
    ssl_options = None
    if url.startswith("rediss://"):
        # TLS: verify against the system CA bundle, or FLEET_REDIS_CA when given.
        import ssl

        ssl_options = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if os.environ.get("FLEET_REDIS_CA"):
            ssl_options["ssl_ca_certs"] = os.environ["FLEET_REDIS_CA"]  # type: ignore[assignment]
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_queues=(Queue(CPU_QUEUE), Queue(GPU_QUEUE)),
        task_default_queue=CPU_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_track_started=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_heartbeat=0,
        broker_use_ssl=ssl_options,
        redis_backend_use_ssl=ssl_options,
        enable_utc=True,
        timezone="UTC",
    )
    return app
