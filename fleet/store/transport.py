"""Celery transport bookkeeping in the broker's Redis: queue contents, which worker process holds
which delivery, putting an unacknowledged message back on its queue, and the dead letters
(messages a worker refused: acknowledged into one bounded list with the reason, never requeued).

Redis I/O only: when a held message counts as orphaned is decided by fleet.redelivery. The
queue lists and the unacked hash/index belong to kombu's Redis transport (fleet.store.keys).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fleet.devices import QUEUES
from fleet.store import keys

MAX_DEAD_LETTERS = 1000
DEAD_LETTER_TEXT = 2048  # characters kept of the reason and of each text field (the raw body)


class Transport:
    def __init__(self, r: Any) -> None:
        self._r = r  # a fleet.store.connection.Translating client

    # -- queues -----------------------------------------------------------------------
    def queue_length(self, queue: str) -> int:
        """Messages waiting in a broker queue: kombu's list for the queue and its priority lists."""
        pipe = self._r.pipeline(transaction=False)
        for key in keys.queue_lists(queue):
            pipe.llen(key)
        return int(sum(pipe.execute()))

    def queued(self, queue: str) -> list[str]:
        return list(self._r.lrange(queue, 0, -1))

    def drop_queued(self, queue: str, raw_messages: list[str]) -> int:
        """Remove these messages (as returned by queued()) from the queue."""
        pipe = self._r.pipeline(transaction=False)
        for raw in raw_messages:
            pipe.lrem(queue, 1, raw)
        return sum(int(n) for n in pipe.execute())

    def unacked_messages(self) -> list[str]:
        """The messages workers hold unacknowledged, as queued() returns them (kombu keeps each
        as [message, exchange, routing key] in its unacked hash; one it cannot read is skipped)."""
        out = []
        for raw in self._r.hvals(keys.UNACKED):
            try:
                out.append(json.dumps(json.loads(raw)[0]))
            except (ValueError, TypeError, IndexError, KeyError):
                continue
        return out

    def unacked_count(self) -> int:
        """How many messages workers hold unacknowledged (kombu's unacked hash)."""
        return int(self._r.hlen(keys.UNACKED))

    def clear_queues(self, queues: tuple[str, ...]) -> None:
        """Every queued and unacknowledged message gone (the embedded run, before its workers start)."""
        self._r.delete(*queues, keys.UNACKED, keys.UNACKED_INDEX, keys.HELD)

    # -- deliveries: which worker process holds which message ------------------------
    def hold(self, instance: str, *delivery_tags: str) -> None:
        """Record that this worker start (instance) holds these deliveries (one command)."""
        if delivery_tags:
            self._r.hset(keys.HELD, mapping=dict.fromkeys(delivery_tags, instance))

    def held(self) -> dict[str, str]:
        return dict(self._r.hgetall(keys.HELD))

    def release(self, *delivery_tags: str) -> None:
        if delivery_tags:
            self._r.hdel(keys.HELD, *delivery_tags)

    def unacked_since(self, delivery_tags: list[str]) -> dict[str, float]:
        """Those of these delivery tags whose message is still unacknowledged, with the time it
        was delivered (kombu's unacked_index)."""
        pipe = self._r.pipeline(transaction=False)
        for tag in delivery_tags:
            pipe.zscore(keys.UNACKED_INDEX, tag)
        return {tag: float(t) for tag, t in zip(delivery_tags, pipe.execute(), strict=True) if t is not None}

    def restore_unacked(self, delivery_tag: str) -> bool:
        """Put an unacknowledged message back on its queue now, as kombu's own restore does
        after the visibility timeout (same transaction: it cannot be restored twice).

        Whoever can write to Redis can leave anything in kombu's unacked hash. An entry that is
        not `[message object, exchange, one of the fleet's queues]` is removed with its records
        and dead-lettered, never raised: one bad entry must not stop the restore of the others,
        nor the heartbeat loop of every worker that runs this check (fleet.redelivery)."""
        restored = False
        refused: list[tuple[str, str]] = []

        def move(pipe: Any) -> None:
            nonlocal restored
            restored = False
            refused.clear()
            raw = pipe.hget(keys.UNACKED, delivery_tag)
            pipe.multi()
            pipe.zrem(keys.UNACKED_INDEX, delivery_tag)
            pipe.hdel(keys.UNACKED, delivery_tag)
            pipe.hdel(keys.HELD, delivery_tag)
            if raw:
                entry, problem = _unacked_entry(raw)
                if entry is None:
                    refused.append((problem, str(raw)))
                    return
                message, routing_key = entry
                message.setdefault("headers", {})["redelivered"] = True
                message.setdefault("properties", {}).setdefault("delivery_info", {})["redelivered"] = True
                pipe.rpush(routing_key, json.dumps(message))  # consumers BRPOP: the front of the queue
                restored = True

        self._r.transaction(move, keys.UNACKED)
        for problem, raw in refused:
            self.dead_letter(
                f"an unacknowledged message could not be restored: {problem}",
                {"delivery_tag": delivery_tag, "body": raw},
            )
        return restored

    # -- dead letters ---------------------------------------------------------------------
    def dead_letter(self, reason: str, record: dict[str, Any]) -> None:
        """Keep a refused message: the reason, when, and what it held (texts truncated)."""
        entry: dict[str, Any] = {"reason": reason[:DEAD_LETTER_TEXT], "at": time.time()}
        for key, value in list(record.items())[:16]:
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                value = repr(value)
            entry[str(key)[:64]] = value[:DEAD_LETTER_TEXT] if isinstance(value, str) else value
        pipe = self._r.pipeline(transaction=True)
        pipe.lpush(keys.DEAD_LETTERS, json.dumps(entry))
        pipe.ltrim(keys.DEAD_LETTERS, 0, MAX_DEAD_LETTERS - 1)
        pipe.incr(keys.DEAD_LETTERS_COUNT)
        pipe.execute()

    def dead_letters(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest dead letters; one that is not JSON is shown as such, never raised."""
        out = []
        for raw in self._r.lrange(keys.DEAD_LETTERS, 0, max(0, limit - 1)):
            try:
                out.append(dict(json.loads(raw)))
            except (ValueError, TypeError):
                out.append({"reason": "corrupt dead-letter record", "raw": str(raw)[:DEAD_LETTER_TEXT]})
        return out

    def dead_letter_count(self) -> int:
        """Messages dead-lettered since the store began (the list keeps the newest MAX_DEAD_LETTERS):
        the counter, and never fewer than the list holds (a counter lost or reset, by hand or by an
        older writer, must not make `orchestrator workers` say "no dead letters" over a full list)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(keys.DEAD_LETTERS_COUNT)
        pipe.llen(keys.DEAD_LETTERS)
        value, held = pipe.execute()
        counted = int(value) if value and str(value).isdigit() else 0
        return max(counted, int(held or 0))


def _unacked_entry(raw: Any) -> tuple[tuple[dict[str, Any], str] | None, str]:
    """kombu's unacked entry `[message, exchange, routing key]` as (message, queue), or None and
    what is wrong with it. The queue must be one of the fleet's (fleet.devices.QUEUES): a restore
    pushes onto it, and any other key (a fleet record, a list of another type) is not a queue."""
    try:
        entry = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        return None, "the entry is not JSON"
    if not isinstance(entry, list) or len(entry) != 3:
        return None, "the entry is not a list [message, exchange, routing key]"
    message, _exchange, routing_key = entry
    if not isinstance(message, dict):
        return None, f"the message must be an object, got {type(message).__name__}"
    for key in ("headers", "properties"):
        if not isinstance(message.get(key, {}), dict):
            return None, f"the message's {key} must be an object"
    props = message.get("properties", {})
    if not isinstance(props.get("delivery_info", {}), dict):
        return None, "the message's properties.delivery_info must be an object"
    if routing_key not in QUEUES:
        return None, f"routing key {str(routing_key)[:64]!r} is not a fleet queue ({', '.join(QUEUES)})"
    return (message, routing_key), ""
