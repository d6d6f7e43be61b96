"""Raw Celery baseline for bench.overhead: a no-op task on the same Redis and settings.

The one module outside fleet/ with its own Redis client, on purpose: the baseline measures
Celery alone, so its task counts completions with a bare INCR on a key of its own
(bench:raw:done, not fleet data), without the fleet store in between. DoneCounter is how
bench.overhead reads and resets that count.
"""

from __future__ import annotations

import redis

from fleet.broker import make_app
from fleet.settings import Settings

app = make_app()
_client = redis.Redis.from_url(Settings.from_env().redis_url)
DONE_KEY = "bench:raw:done"


class DoneCounter:
    """The baseline's completion count (bench:raw:done) in the Redis at url."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)

    def reset(self) -> None:
        self._client.delete(DONE_KEY)

    def count(self) -> int:
        return int(self._client.get(DONE_KEY) or 0)


@app.task(name="bench.noop", acks_late=True)
def noop(i: int) -> None:
    _client.incr(DONE_KEY)  # one write, as a fleet job writes its result


@app.task(name="bench.spin", acks_late=True)
def spin_task(i: int, seconds: float) -> None:
    from bench.plugins import spin

    spin(seconds)
    _client.incr(DONE_KEY)
