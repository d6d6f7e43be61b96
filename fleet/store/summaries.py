"""Per-job summaries in Redis: one small record per job (its recent outcomes, compact), the list
of runs they hold, and each finished run's counts per status. Redis I/O only: what a record holds
and how a run is folded into it is decided by orchestrator.summaries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fleet import records
from fleet.errors import StoreCorrupt
from fleet.store import keys

LOCK_TTL_S = 300


class Summaries:
    def __init__(self, r: Any) -> None:
        self._r = r  # a fleet.store.connection.Translating client

    def meta(self) -> dict[str, Any]:
        """{"seq": last fold number, "runs": [[seq, run_id, started_at], ...] oldest first}; empty
        when nothing was folded yet; a marker (CORRUPT_KEY set) when it cannot be read (the
        summaries are then not used until they are rebuilt: orchestrator.summaries)."""
        try:
            raw = self._r.get(keys.SUMMARIES_META)
        except StoreCorrupt:
            return {records.CORRUPT_KEY: "the summaries' meta key holds another type"}
        if not raw:
            return {}
        return records.decode_object(raw) or {records.CORRUPT_KEY: "the summaries' meta is not a JSON object"}

    def records(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The records of these jobs that exist (one round trip); one that is not a JSON object
        is a marker (CORRUPT_KEY set), never taken for a job without a record."""
        if not job_ids:
            return {}
        try:
            values = self._r.hmget(keys.SUMMARIES, job_ids)
        except StoreCorrupt:
            return {jid: {records.CORRUPT_KEY: "the summaries key holds another type"} for jid in job_ids}
        out = {}
        for jid, raw in zip(job_ids, values, strict=True):
            if raw:
                out[jid] = records.decode_object(raw) or {records.CORRUPT_KEY: f"summary of {jid} is not a JSON object"}
        return out

    def write(self, changed: Mapping[str, dict[str, Any]], meta: dict[str, Any], counts: tuple[str, Any]) -> None:
        """The records of one folded run, then (only once they are written) the new meta and that
        run's counts. A record written for a run the meta does not list is never read, and is
        replaced when the run is folded again (orchestrator.summaries.fold)."""
        if changed:
            self._r.hset(keys.SUMMARIES, mapping={k: json.dumps(v, separators=(",", ":")) for k, v in changed.items()})
        pipe = self._r.pipeline(transaction=True)
        pipe.set(keys.SUMMARIES_META, json.dumps(meta, separators=(",", ":")))
        run_id, value = counts
        pipe.set(keys.run(run_id, "counts"), json.dumps(value, separators=(",", ":")))
        pipe.execute()

    def clear(self) -> None:
        self._r.delete(keys.SUMMARIES, keys.SUMMARIES_META)

    def counts(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The counts kept for these (finished, folded) runs; a run without them is left out."""
        if not run_ids:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.get(keys.run(rid, "counts"))
        out = {}
        for rid, raw in zip(run_ids, pipe.execute(raise_on_error=False), strict=True):
            value = records.decode_object(raw) if isinstance(raw, str) else None
            if value is not None:
                out[rid] = value
        return out

    @contextmanager
    def lock(self) -> Iterator[bool]:
        """Whether this process holds the fold lock (another process folding: False, nothing waits)."""
        token = uuid.uuid4().hex
        held = bool(self._r.set(keys.SUMMARIES_LOCK, token, nx=True, ex=LOCK_TTL_S))
        try:
            yield held
        finally:
            if held and self._r.get(keys.SUMMARIES_LOCK) == token:
                self._r.delete(keys.SUMMARIES_LOCK)
