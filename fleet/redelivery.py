"""Jobs of a dead worker are delivered again within a minute, not after the visibility timeout.

Each worker process records the delivery tag of every message it receives under its instance
id (a random id per worker start, shown in its heartbeat). A worker whose heartbeat expired
is dead; the messages it held that are still unacknowledged, and were delivered more than a
heartbeat's lifetime (30 s) ago, are put back on their queue at once (fleet.store.transport.restore_unacked:
the same transaction kombu uses after the visibility timeout, so a message is never restored
twice). Every live worker's heartbeat loop and every waiting orchestrator run this check;
whoever comes first restores.
"""

from __future__ import annotations

import time

from fleet.store import ResultStore
from fleet.timing import WORKER_TTL_S


def restore_orphans(store: ResultStore) -> int:
    """Restore the unacknowledged messages of worker processes with no live heartbeat; forget
    the records of messages already acknowledged. Returns how many messages were restored."""
    held = store.transport.held()
    if not held:
        return 0
    live = {w.get("instance") for w in store.registry.live_workers()}
    unacked = store.transport.unacked_since(list(held))
    store.transport.release(*(tag for tag in held if tag not in unacked))
    # A worker that has just started may receive a message before its first heartbeat is
    # written: only messages delivered longer than a heartbeat's lifetime ago are restored.
    settled = time.time() - WORKER_TTL_S
    orphans = [tag for tag, instance in held.items() if instance not in live and unacked.get(tag, settled) < settled]
    return sum(store.transport.restore_unacked(tag) for tag in orphans)
