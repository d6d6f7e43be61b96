"""Riding out a Redis that is away for a moment (a restart) or full (maxmemory reached).

Workers write every result through retry_redis: a result is not dropped, nor the worker
crashed, because Redis is restarting or out of memory; it waits with a bounded backoff and,
after timeout_s, gives up with one clear log line (the job then ends LOST at the run's deadline,
the normal path for a job without a result).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from fleet.errors import RedisOutOfMemory, RedisUnreachable

T = TypeVar("T")
logger = logging.getLogger("fleet.retrying")
MAX_DELAY_S = 5.0
# How Redis says it is full: "OOM command not allowed when used memory > 'maxmemory'" (redis-py
# and kombu's pipelines may drop the "OOM" prefix).
_FULL_MARKERS = ("OOM command not allowed", "used memory > 'maxmemory'")


def says_out_of_memory(error: BaseException | str) -> bool:
    """Whether an error (redis-py's, kombu's, a Lua script's) is Redis refusing a write at maxmemory,
    or was caused by it (kombu's failed publish batch wraps redis-py's error)."""
    seen: BaseException | str | None = error
    for _ in range(16):  # a cause chain is short; a cycle is not followed for ever
        if seen is None:
            return False
        if isinstance(seen, RedisOutOfMemory) or any(marker in str(seen) for marker in _FULL_MARKERS):
            return True
        if isinstance(seen, str):
            return False
        seen = seen.__cause__ or seen.__context__
    return False


def retry_redis(fn: Callable[[], T], timeout_s: float = 300.0, first_delay_s: float = 0.2) -> T:
    """fn(), retried while Redis is unreachable or out of memory, for up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    delay = first_delay_s
    warned = False
    while True:
        try:
            return fn()
        except (RedisUnreachable, RedisOutOfMemory) as exc:
            if time.monotonic() + delay > deadline:
                logger.error("giving up after %.0f s of retries: %s", timeout_s, exc.message)
                raise
            if not warned and isinstance(exc, RedisOutOfMemory):
                logger.warning("Redis is out of memory; retrying for up to %.0f s: %s", timeout_s, exc.message)
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
