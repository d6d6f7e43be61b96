"""kombu's Redis transport, with every queue entry checked before kombu decodes it.

Every Celery app of the fleet uses it (fleet.broker sets `broker_transport`): workers, the
orchestrator, `celery -A fleet.broker inspect`. It is kombu's own transport with one change: the
raw entry a consumer pops from a queue (the reply to kombu's BRPOP, or to the RPOP of a
basic_get) goes through fleet.envelopes.entry_problem() before kombu reads it. An entry kombu
could not decode, which would raise inside the worker's event loop, is written to the dead-letter
list (fleet.store.transport: the reason, the queue, the worker, the raw entry cut to 2 KB) and
dropped; kombu sees an empty reply and polls again. It was popped, so it is never requeued; it
never entered the unacked hash, so no restore brings it back. A sound entry is left exactly as
kombu reads it: acknowledgements, visibility, restoring unacked messages are kombu's.

It also notes when the consumer last had an answer to its BRPOP (a message, or the empty reply of
an idle poll, about every second): last_poll(). A worker's heartbeat carries it, so a consumer
that no longer consumes (its broker connection hung) shows as stuck while its heartbeat thread
still runs (orchestrator.liveness).

A worker sets hold_deliveries_as(its instance id): then the record that this worker start holds a
message (fleet.redelivery) is written in the transaction in which kombu records the message as
unacknowledged (QoS.append, one round trip kombu makes for every delivery anyway), so a held
message never lacks its record, and no thread or round trip of its own writes it. A record that
cannot be written (fleet:held of another type) is logged and the message goes on: the visibility
timeout stays its backstop.

Fanout messages (remote control, events) arrive by PUBLISH, decoded by kombu (which already
drops text that is not JSON); one whose envelope would still break kombu is dead-lettered too.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from fleet.envelopes import entry_problem, payload_problem
from fleet.errors import FleetError
from fleet.settings import Settings
from fleet.store import keys
from fleet.store.transport import DEAD_LETTER_TEXT
from fleet.store.transport import Transport as StoreTransport

SCREENED = ("BRPOP", "RPOP")  # the commands whose replies are queue entries
logger = logging.getLogger("fleet.transport")
_polled: dict[str, float | None] = {"at": None}  # when this process's consumer last had a BRPOP reply
_holder: dict[str, str | None] = {"instance": None}  # the worker start whose held deliveries are recorded


def hold_deliveries_as(instance: str | None) -> None:
    """Record every message this process's consumer receives as held by this worker start
    (fleet.store.keys.HELD, read by fleet.redelivery), with kombu's unacked entry; None: stop."""
    _holder["instance"] = instance


def last_poll() -> float | None:
    """When a BRPOP of this process last returned (Unix time), or None: never."""
    return _polled["at"]


def _consumer_name() -> str:
    """The worker's name (FLEET_WORKER_NAME), or the host's: who refused the entry."""
    try:
        return Settings.from_env().worker_name or socket.gethostname()
    except FleetError:
        return socket.gethostname()


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS whose record of a delivery also records who holds it (see the module's
    docstring). Without a holder set it is kombu's own."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        instance = _holder["instance"]
        if instance is None:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        delivery = message.delivery_info
        entry = json.dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.pipe_or_acquire() as pipe:  # kombu's append, with the hold in the same transaction
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, entry)
            pipe.hset(keys.HELD, delivery_tag, instance)
            replies = pipe.execute(raise_on_error=False)
            for reply in replies[:2]:  # kombu's own writes: raised, as kombu raises them
                if isinstance(reply, Exception):
                    raise reply
            if isinstance(replies[2], Exception):  # fleet:held of another type: the job goes on
                logger.warning("could not record the held message %s: %s", delivery_tag, replies[2])
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    """kombu's Redis channel whose clients screen queue entries and whose QoS records who holds
    each delivery (see the module's docstring)."""

    QoS = QoS

    def _get_client(self) -> Any:
        client: Any = super()._get_client()  # type: ignore[no-untyped-call]
        keywords: dict[str, Any] = {}
        if isinstance(client, functools.partial):  # a global key prefix: PrefixedStrictRedis
            client, keywords = client.func, dict(client.keywords)
        screen = self._screen_reply

        class ScreeningClient(client):  # type: ignore[misc]
            def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
                reply = super().parse_response(connection, command_name, **options)
                if command_name == "BRPOP":
                    _polled["at"] = time.time()
                return screen(command_name, reply) if command_name in SCREENED and reply else reply

        return functools.partial(ScreeningClient, **keywords) if keywords else ScreeningClient

    def _screen_reply(self, command: str, reply: Any) -> Any:
        """The reply as it is, or None (kombu: nothing there) when its entry was dead-lettered."""
        if command == "BRPOP":
            if not isinstance(reply, (list, tuple)) or len(reply) != 2:
                return reply
            key, entry = reply
        else:
            key, entry = None, reply
        problem = entry_problem(entry)
        if problem is None:
            return reply
        queue = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if isinstance(queue, str):
            queue = queue.rsplit(self.sep, 1)[0]  # a priority list: its queue
        self._dead_letter(problem, queue, entry)
        return None

    def _deliver_fanout_message(self, message: Any, exchange: Any) -> Any:
        problem = payload_problem(message)
        if problem is None:
            return super()._deliver_fanout_message(message, exchange)  # type: ignore[no-untyped-call]
        self._dead_letter(problem, self._fanout_to_queue.get(exchange), json.dumps(message, default=repr))
        return False

    def _dead_letter(self, reason: str, queue: Any, entry: Any) -> None:
        """Keep the refused entry in the dead-letter list; never raise (the consumer goes on)."""
        logger.error("dead-lettered a queue entry kombu cannot decode: %s", reason)
        raw = entry if isinstance(entry, (bytes, bytearray)) else str(entry).encode("utf-8", "replace")
        record = {
            "queue": str(queue)[:255] if queue is not None else None,
            "worker": _consumer_name(),
            "stage": "envelope",
            "entry_bytes": len(raw),
            "entry": bytes(raw[: DEAD_LETTER_TEXT * 4]).decode("utf-8", "replace")[:DEAD_LETTER_TEXT],
        }
        try:
            with self.conn_or_acquire() as client:
                StoreTransport(client).dead_letter(reason, record)
        except Exception as exc:  # Redis away, a dead-letter key of another type: never stop the consumer
            logger.error("could not record the dead letter (%r); the entry is dropped: %s", exc, reason)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the screening Channel."""

    Channel = Channel
