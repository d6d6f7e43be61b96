"""Jobs of a dead worker are delivered again within about a minute, not after the visibility timeout.

Each worker process records the delivery tag of every message it receives under its instance
id (a random id per worker start, shown in its heartbeat). A worker whose heartbeat expired
may be dead; the messages it held that are still unacknowledged, and were delivered more than a
heartbeat's lifetime (30 s) ago, are put back on their queue (fleet.store.transport.restore_unacked: the
same transaction kombu uses after the visibility timeout, so a message is never restored twice).
Every live worker's heartbeat loop and every waiting orchestrator run this check; whoever comes
first restores.

An expired heartbeat alone is not proof of death: while Redis is down (or stopped) nobody can
renew a heartbeat, so every worker's key expires together, the running ones included. So an
observer (an OrphanWatch, one per process) restores a message only after it has itself seen the
holder without a heartbeat for ORPHAN_CONFIRM_S of uninterrupted contact with Redis: its own
checks at most MAX_CHECK_GAP_S apart, all of them answered. Any gap (an outage, a stopped
observer) starts the observation again. A live worker renews its heartbeat within one beat of
Redis coming back, long before the observation ends, so an outage of any length never makes a
running job run twice. The cost: a really dead worker's jobs wait about 30 s more.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fleet.errors import FleetError
from fleet.store import ResultStore
from fleet.timing import WORKER_TTL_S

ORPHAN_CONFIRM_S = float(WORKER_TTL_S)  # seen orphaned this long, with contact throughout
MAX_CHECK_GAP_S = 25.0  # checks further apart than this are not "uninterrupted contact"


class OrphanWatch:
    """What this process has seen: since when each held message looked orphaned, and when it
    last heard from Redis. The state lives in the observer's memory, not in Redis, so an outage
    cannot age it: it can only reset it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: dict[str, float] = {}  # delivery tag -> first seen orphaned (this process's clock)
        self._last_contact: float | None = None

    def lost_contact(self) -> None:
        """Redis did not answer: whatever was being observed starts again."""
        self._since.clear()
        self._last_contact = None

    def confirmed(self, orphans: list[str]) -> list[str]:
        """Of the tags that look orphaned now, those seen so for ORPHAN_CONFIRM_S of unbroken contact."""
        now = self._clock()
        if self._last_contact is None or now - self._last_contact > MAX_CHECK_GAP_S:
            self._since.clear()
        self._last_contact = now
        self._since = {tag: self._since.get(tag, now) for tag in orphans}
        return [tag for tag, since in self._since.items() if now - since >= ORPHAN_CONFIRM_S]


def restore_orphans(store: ResultStore, watch: OrphanWatch) -> int:
    """Restore the unacknowledged messages of worker processes that this watch has seen without
    a heartbeat long enough; forget the records of messages already acknowledged. Returns how
    many messages were restored. A Redis error resets the watch and propagates."""
    try:
        held = store.transport.held()
        live = {w.get("instance") for w in store.registry.live_workers()} if held else set()
        unacked = store.transport.unacked_since(list(held)) if held else {}
    except FleetError:
        watch.lost_contact()
        raise
    if not held:
        watch.confirmed([])
        return 0
    store.transport.release(*(tag for tag in held if tag not in unacked))
    # A worker that has just started may receive a message before its first heartbeat is
    # written: only messages delivered longer than a heartbeat's lifetime ago can be orphans.
    settled = time.time() - WORKER_TTL_S
    orphans = [tag for tag, instance in held.items() if instance not in live and unacked.get(tag, settled) < settled]
    return sum(store.transport.restore_unacked(tag) for tag in watch.confirmed(orphans))
