"""What the fleet knows about itself in Redis: live workers (heartbeats with a TTL), the
architecture listings workers publish, schedule slots, and the reports saved for runs."""

from __future__ import annotations

import json
from typing import Any

from fleet import records
from fleet.protocol import now
from fleet.store import keys
from fleet.timing import WORKER_TTL_S


class Registry:
    def __init__(self, r: Any) -> None:
        self._r = r  # a fleet.store.connection.Translating client

    # -- workers ----------------------------------------------------------------------
    def heartbeat(self, name: str, info: dict[str, Any], ttl: int = WORKER_TTL_S) -> None:
        self._r.set(keys.worker(name), json.dumps({**info, "seen_at": now()}), ex=ttl)

    def forget_worker(self, name: str) -> None:
        self._r.delete(keys.worker(name))

    def worker_names(self) -> list[str]:
        """The names of the workers whose heartbeat has not expired, sorted."""
        prefix = keys.worker("")
        return sorted(k.removeprefix(prefix) for k in self._r.scan_iter(keys.worker("*")))

    def live_workers(self) -> list[dict[str, Any]]:
        """The heartbeats that have not expired, their fields typed and in range (records.decode_heartbeat)."""
        found = sorted(self._r.scan_iter(keys.worker("*")))
        values = self._r.mget(found) if found else []
        prefix = keys.worker("")
        decoded = (
            records.decode_heartbeat(records.decode_object(v), str(k).removeprefix(prefix))
            for k, v in zip(found, values, strict=True)
            if v
        )
        return [w for w in decoded if w is not None]

    def served_queues(self) -> set[str]:
        return {q for w in self.live_workers() for q in w.get("queues") or []}

    # -- architectures ------------------------------------------------------------------
    def publish_architectures(self, listing: dict[str, Any]) -> None:
        """A worker's architecture listing, under its transformers version (listing["transformers"])."""
        self._r.set(keys.architectures(str(listing["transformers"])), json.dumps(listing))

    def newest_architectures(self) -> dict[str, Any] | None:
        """The listing published under the greatest transformers version (sorted as text), or None."""
        found = sorted(self._r.keys(keys.architectures("*")))
        if not found:
            return None
        return records.decode_object(self._r.get(found[-1]))  # not a JSON object: none

    # -- schedule ---------------------------------------------------------------------
    def claim_slot(self, slot: str, run_id: str, ttl_s: int = 7 * 86400) -> bool:
        """At most one run per schedule slot, whoever asks (SET NX)."""
        return bool(self._r.set(keys.slot(slot), run_id, nx=True, ex=ttl_s))

    def slot_run(self, slot: str) -> str | None:
        value = self._r.get(keys.slot(slot))
        return str(value) if value is not None else None

    # -- reports (a run's key: pruned with the run) -------------------------------------
    def save_report(self, run_id: str, markdown: str) -> None:
        self._r.set(keys.run(run_id, "report"), markdown)

    def saved_report(self, run_id: str) -> str | None:
        value = self._r.get(keys.run(run_id, "report"))
        return str(value) if value is not None else None
