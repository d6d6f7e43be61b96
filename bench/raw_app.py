"""Raw Celery baseline for bench.overhead: a no-op task on the same Redis and settings."""

from __future__ import annotations

import redis

from fleet.broker import make_app
from fleet.settings import Settings

app = make_app()
_client = redis.Redis.from_url(Settings.from_env().redis_url)


@app.task(name="bench.noop", acks_late=True)
def noop(i: int) -> None:
    _client.incr("bench:raw:done")  # one write, as a fleet job writes its result


@app.task(name="bench.spin", acks_late=True)
def spin_task(i: int, seconds: float) -> None:
    from bench.plugins import spin

    spin(seconds)
    _client.incr("bench:raw:done")
