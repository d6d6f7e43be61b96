"""Raw Redis queue entries that kombu itself cannot decode, pushed with LPUSH as anyone with
access to Redis could: before fleet.redis_transport they made `fleet-worker` exit 1
("Unrecoverable error") or restart its consumer and lose the entry without a trace. Each is
dead-lettered with its reason by the same worker process, which goes on serving."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from fleet.broker import make_app
from fleet.store import ResultStore
from tests.helpers import orchestrator, raw_redis
from tests.test_faults import wait_until
from tests.test_poison import assert_still_serving, headers, settled


def envelope(name: str, **over: Any) -> dict[str, Any]:
    """A queue entry as kombu's Redis transport writes it (virtual.Channel.prepare_message and
    basic_publish), naming itself in its correlation id; `over` replaces top-level fields, and
    `properties` / `delivery_info` entries given as dicts are merged ("<absent>": removed)."""
    body = base64.b64encode(json.dumps([[{}], {}, None]).encode()).decode()
    entry: dict[str, Any] = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers(),
        "properties": {
            "correlation_id": name,
            "reply_to": None,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "cpu", "routing_key": "cpu"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    props = over.pop("properties", {})
    info = over.pop("delivery_info", {})
    entry.update(over)
    if isinstance(props, dict):
        entry["properties"].update(props)
        if isinstance(info, dict):
            entry["properties"]["delivery_info"].update(info)
        else:
            entry["properties"]["delivery_info"] = info
    else:
        entry["properties"] = props
    for part in (entry, entry.get("properties"), entry.get("properties", {}).get("delivery_info")):
        if isinstance(part, dict):
            for key in [k for k, v in part.items() if v == "<absent>"]:
                del part[key]
    return entry


# name -> (the raw entry, a part of the reason its dead letter must give). Each entry holds its
# name in quotes in its first 2 KB, so that its dead letter can be told apart.
ENTRIES: dict[str, tuple[str | bytes, str]] = {
    "not-json": ('{nope "not-json"', "not JSON"),
    "not-utf8": (b'{"n": "not-utf8", "x": "\xff\xfe"}', "not UTF-8"),
    "a-json-list": (json.dumps(["a-json-list", {"properties": {}}]), "must be a JSON object, got list"),
    "deep": ('{"n": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "not JSON"),
    "properties-a-string": (json.dumps({**envelope("x"), "properties": "properties-a-string"}), "properties must be"),
    "delivery-info-a-string": (
        json.dumps(envelope("delivery-info-a-string", delivery_info="x")),
        "properties.delivery_info must be",
    ),
    "headers-a-list": (json.dumps(envelope("headers-a-list", headers=["a"])), "headers must be"),
    "encoding-rot13": (json.dumps(envelope("encoding-rot13", properties={"body_encoding": "rot13"})), "body_encoding"),
    "no-delivery-tag": (
        json.dumps(envelope("no-delivery-tag", properties={"delivery_tag": "<absent>"})),
        "properties.delivery_tag",
    ),
    "delivery-tag-an-object": (
        json.dumps(envelope("delivery-tag-an-object", properties={"delivery_tag": {"a": 1}})),
        "properties.delivery_tag",
    ),
    "no-exchange": (
        json.dumps(envelope("no-exchange", delivery_info={"exchange": "<absent>"})),
        "delivery_info.exchange",
    ),
    "no-routing-key": (
        json.dumps(envelope("no-routing-key", delivery_info={"routing_key": "<absent>"})),
        "delivery_info.routing_key",
    ),
    "priority-infinite": (
        json.dumps(envelope("priority-infinite", properties={"priority": float("inf")})),
        "properties.priority",
    ),
    "body-not-base64": (json.dumps(envelope("body-not-base64", body="abc")), "base64"),
    "body-a-number": (json.dumps(envelope("body-a-number", body=5)), "body must be"),
    "compressed": (json.dumps(envelope("compressed", headers=headers(compression="rot13"))), "compression"),
}


def test_undecodable_queue_entries_are_dead_lettered_and_the_worker_keeps_serving(redis_url: str, start_worker) -> None:
    w = start_worker(redis_url)
    store = ResultStore(redis_url)
    pid = w.celery_main().pid
    raw = raw_redis(redis_url)  # entries written as a hostile sender would, past kombu's producer
    for entry, _ in ENTRIES.values():
        raw.lpush("cpu", entry)
    # A fanout message (remote control: what `celery inspect` sends) arrives by PUBLISH.
    raw.publish("/0.celery.pidbox", json.dumps(["fanout-a-list"]))
    total = len(ENTRIES) + 1
    wait_until(lambda: store.transport.dead_letter_count() == total, timeout=120, what="every entry refused")
    wait_until(lambda: settled(store), timeout=30, what="nothing left or requeued")
    letters = store.transport.dead_letters(100)
    (name,) = [x["name"] for x in store.registry.live_workers()]
    for what, (_, reason) in ENTRIES.items():
        (letter,) = [d for d in letters if f'"{what}"' in d["entry"]]
        assert reason in letter["reason"], (what, letter)
        assert letter["queue"] == "cpu" and letter["worker"] == name, letter
        assert letter["stage"] == "envelope" and letter["entry_bytes"] == len(ENTRIES[what][0]), letter
        assert len(letter["entry"]) == min(2048, len(ENTRIES[what][0])), letter  # the raw entry, cut to 2 KB
    (fanout,) = [d for d in letters if '"fanout-a-list"' in d["entry"]]
    assert "must be a JSON object" in fanout["reason"] and "pidbox" in fanout["queue"], fanout
    assert_still_serving(store, redis_url, w, pid)
    replies = make_app(redis_url).control.ping(timeout=10)  # remote control still answers
    assert [list(r.values()) for r in replies] == [[{"ok": "pong"}]], replies
    log = w.log.read_text()
    assert "Traceback" not in log and "consumer: Connection to broker lost" not in log, log[-3000:]
    listing = orchestrator("workers", "--redis-url", redis_url)
    assert f"dead letters: {total}" in listing.stdout, listing.stdout + listing.stderr
