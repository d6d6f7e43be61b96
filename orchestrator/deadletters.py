"""Dead letters for people: the messages workers refused (fleet.store.transport)."""

from __future__ import annotations

from datetime import UTC, datetime

from fleet.store import ResultStore


def lines(store: ResultStore, limit: int = 5) -> list[str]:
    """A summary line, then the newest `limit` dead letters (one line each); nothing when none."""
    total = store.transport.dead_letter_count()
    if not total:
        return []
    out = [f"dead letters: {total} message(s) refused by workers (newest {limit}):"]
    for d in store.transport.dead_letters(limit):
        at = d.get("at")
        when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if isinstance(at, (int, float)) else "?"
        out.append(f"  {when}  {d.get('worker') or '?'}  queue={d.get('queue') or '?'}  {d.get('reason')}"[:300])
    return out
