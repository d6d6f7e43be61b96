"""Dead letters for people: the messages workers refused (fleet.store.transport)."""

from __future__ import annotations

from datetime import UTC, datetime

from fleet import records
from fleet.errors import StoreCorrupt
from fleet.store import ResultStore


def lines(store: ResultStore, limit: int = 5) -> list[str]:
    """A summary line, then the newest `limit` dead letters (one line each); nothing when none."""
    try:
        total = store.transport.dead_letter_count()
        letters = store.transport.dead_letters(limit) if total else []
    except StoreCorrupt as exc:  # a dead-letter key of another type
        return [f"dead letters: cannot be read: {exc.message}"[:300]]
    if not total:
        return []
    out = [f"dead letters: {total} message(s) refused by workers (newest {limit}):"]
    for d in letters:
        at = records.decode_time(d.get("at"))
        when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at is not None else "?"
        out.append(f"  {when}  {d.get('worker') or '?'}  queue={d.get('queue') or '?'}  {d.get('reason')}"[:300])
    return out
