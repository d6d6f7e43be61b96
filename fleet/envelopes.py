"""The kombu envelope of a message as a Redis queue holds it, checked before kombu decodes it.

kombu's Redis transport keeps each message as one JSON text in the queue's list:
`{"body", "content-type", "content-encoding", "headers", "properties": {"delivery_tag",
"delivery_info": {"exchange", "routing_key"}, "body_encoding", "priority", ...}}`. A consumer
pops it (BRPOP) and kombu decodes it in its event loop (kombu.transport.redis.Channel._brpop_read,
virtual.Message, QoS.append). Whoever can write to Redis can LPUSH anything there, and an entry
that is not JSON, a list, `properties` as a string, no `delivery_tag`, an unknown
`body_encoding`, ... raises inside kombu: the worker exits ("Unrecoverable error") or its
consumer restarts, and the entry, already popped, is gone without a trace.

entry_problem() says what is wrong with such an entry, or None when kombu can decode it and
hand a Message to the worker's consumer; fleet.redis_transport dead-letters the entries with a
problem. The task message inside a sound envelope is then checked by fleet.messages.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fleet import records
from fleet.numbers import finite

MAX_TAG = 255  # kombu's delivery tags are UUIDs (36 characters)
BODY_ENCODINGS = ("base64",)  # kombu's only codec; "utf-8" (any case) or none: the body as it is


def entry_problem(raw: Any) -> str | None:
    """What keeps kombu from decoding this raw queue entry (bytes from Redis), or None."""
    if isinstance(raw, bytearray):
        raw = bytes(raw)
    if not isinstance(raw, (bytes, str)):
        return f"the queue entry must be text, got {type(raw).__name__}"
    try:
        payload = records.json_loads(raw)
    except UnicodeDecodeError:
        return "the queue entry is not UTF-8"
    except RecursionError:
        return "the queue entry is not JSON: nested too deeply"
    except ValueError as exc:
        return f"the queue entry is not JSON: {str(exc)[:200]}"
    return payload_problem(payload)


def payload_problem(payload: Any) -> str | None:
    """What keeps kombu from building a Message of this decoded entry, or None."""
    if not isinstance(payload, dict):
        return f"the queue entry must be a JSON object, got {type(payload).__name__}"
    props = payload.get("properties")
    if not isinstance(props, dict):
        return f"properties must be an object, got {type(props).__name__}"
    tag = props.get("delivery_tag")
    if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG:
        return f"properties.delivery_tag must be a string of 1-{MAX_TAG} characters"
    info = props.get("delivery_info")
    if not isinstance(info, dict):
        return f"properties.delivery_info must be an object, got {type(info).__name__}"
    for key in ("exchange", "routing_key"):
        if not isinstance(info.get(key), str):
            return f"properties.delivery_info.{key} must be a string"
    priority = props.get("priority")
    if priority is not None and finite(priority) is None:
        return "properties.priority must be a finite number or null"
    headers = payload.get("headers")
    if not isinstance(headers, dict):
        return f"headers must be an object, got {type(headers).__name__}"
    if headers.get("compression") is not None:  # kombu would decompress; our producers never compress
        return f"headers.compression {str(headers['compression'])[:64]!r}: compressed messages are not accepted"
    return _body_problem(payload.get("body"), props.get("body_encoding"))


def _body_problem(body: Any, encoding: Any) -> str | None:
    if not isinstance(body, str):
        return f"the body must be a string, got {type(body).__name__}"
    if encoding is None or encoding == "" or (isinstance(encoding, str) and encoding.lower() == "utf-8"):
        return None
    if encoding not in BODY_ENCODINGS:
        return f"properties.body_encoding {str(encoding)[:64]!r}; only base64 (or none) is accepted"
    try:
        base64.b64decode(body.encode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        return f"the body is not base64: {exc}"
    return None
