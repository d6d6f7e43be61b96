"""Whether a worker is working, not merely alive: a heartbeat thread can run on while the
consumer beside it is stuck (a hung broker connection, a blocked event loop).

A worker's heartbeat carries `polled_at`, when its consumer last had a reply from the broker (a
message, or the empty reply of an idle poll, about every second: fleet.redis_transport), and
`holding`, how many jobs it holds. A consumer whose slots are all busy does not poll, so only a
worker that holds fewer jobs than its slots and has not polled for STUCK_AFTER_S is stuck.
"""

from __future__ import annotations

import time
from typing import Any

from fleet import records

STUCK_AFTER_S = 30.0  # the consumer polls about every second when idle


def stuck_since(worker: dict[str, Any], now: float | None = None, after_s: float = STUCK_AFTER_S) -> float | None:
    """Since when this worker's consumer has not polled while it had a free slot, or None (working,
    busy, or a heartbeat from a worker that does not report polls)."""
    now = time.time() if now is None else now
    if "polled_at" not in worker:
        return None  # an older worker: nothing to judge by
    # typed and in range (a field that is not: unknown), however the caller read it
    worker = records.decode_heartbeat(worker, "?") or {}
    polled, holding, slots = worker.get("polled_at"), worker.get("holding"), worker.get("concurrency")
    if holding is not None and slots is not None and holding >= slots > 0:
        return None  # every slot busy: no poll is expected
    if polled is None:
        started = worker.get("started_at")  # never polled: stuck since it started, if long enough ago
        if started is not None and now - started > after_s:
            return float(started)
        return None
    return float(polled) if now - polled > after_s else None
