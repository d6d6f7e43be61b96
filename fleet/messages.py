"""The Celery task message (protocol 2) as a worker receives it, checked before Celery acts on it.

Whoever can write to the broker can send any bytes with any headers. Celery's consumer trusts
them: a body that is not `[args, kwargs, embed]`, a `timelimit` that is not a pair or
`stamped_headers: 5` raise inside its event loop, the worker exits ("Unrecoverable error")
and the message, never acknowledged, comes back to crash the next one. So a worker's consumer
(workers/screen.py) runs message_problem() on every message first; a message with a problem is
acknowledged into the dead-letter list (fleet.store) with the reason, and Celery never sees it.

What is accepted is what our own producers send (celery.app.amqp.as_task_v2): JSON in UTF-8,
a task this worker runs with its number of positional arguments, no keyword arguments, no
callbacks, chords or chains, no ETA, an expiry only as an ISO time, and bounded sizes and nesting.
Unknown headers are allowed (kombu adds its own, fleet.store.restore_unacked sets `redelivered`)
within the size bound.
The job inside is checked by the task itself (fleet.jobs), where a refusal can become a result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fleet import records
from fleet.numbers import finite

MAX_BODY_BYTES = 1 << 20  # a job with 32 candidates and its pins is well under 100 KB
MAX_HEADERS_BYTES = 64 << 10
MAX_ID = 255  # id, root_id, parent_id, group, task names
MAX_REPR = 4096  # argsrepr, kwargsrepr, origin: shown in logs and events
MAX_STAMPS = 32
# How deep headers and body may nest (ours: 7 for the body, a job with pins and a lock; 2 for the
# headers). Celery pickles both to hand the task to a pool process; one nested a few hundred deep
# raises RecursionError there after the pool's slot was taken, and the slot is never given back.
MAX_DEPTH = 32
MAX_TIME_LIMIT = 7 * 86400.0
CONTENT_TYPE = "application/json"
ENCODINGS = ("utf-8", "utf8")
_IDS = ("root_id", "parent_id", "group", "shadow", "lang")
_REPRS = ("argsrepr", "kwargsrepr", "origin")
_INTS = ("retries", "group_index", "replaced_task_nesting")
_EMBED_EMPTY = ("callbacks", "errbacks", "chain", "chord")


def message_problem(
    headers: Any, body: Any, content_type: Any, content_encoding: Any, tasks: Mapping[str, int]
) -> str | None:
    """What makes this message one the worker must not hand to Celery, or None.
    tasks: the task names this worker accepts -> how many positional arguments each takes."""
    if content_type != CONTENT_TYPE:
        return f"content type {str(content_type)[:64]!r}; only {CONTENT_TYPE} is accepted"
    if str(content_encoding).lower() not in ENCODINGS:
        return f"content encoding {str(content_encoding)[:64]!r}; only utf-8 is accepted"
    problem = headers_problem(headers, tasks)
    if problem:
        return problem
    return body_problem(body, tasks[headers["task"]])


def headers_problem(headers: Any, tasks: Mapping[str, int]) -> str | None:
    if not isinstance(headers, dict):
        return f"headers must be an object, got {type(headers).__name__}"
    if too_deep(headers):
        return f"headers nest deeper than {MAX_DEPTH} levels"
    try:
        size = len(json.dumps(headers))
    except (TypeError, ValueError):
        return "headers are not JSON data"
    if size > MAX_HEADERS_BYTES:
        return f"headers are {size} bytes; at most {MAX_HEADERS_BYTES}"
    task = headers.get("task")
    if not isinstance(task, str) or task not in tasks:
        return f"task {str(task)[:MAX_ID]!r} is not a task this worker runs ({', '.join(tasks)})"
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not 0 < len(task_id) <= MAX_ID:
        return f"headers.id must be a string of 1-{MAX_ID} characters"
    for key, limit in [(k, MAX_ID) for k in _IDS] + [(k, MAX_REPR) for k in _REPRS]:
        value = headers.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            return f"headers.{key} must be a string of at most {limit} characters or null"
    for key in _INTS:
        value = headers.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 31):
            return f"headers.{key} must be a non-negative integer or null"
    if headers.get("ignore_result") is not None and not isinstance(headers["ignore_result"], bool):
        return "headers.ignore_result must be true, false or null"
    if headers.get("eta") is not None:
        return "headers.eta must be null (jobs are never delayed)"
    expires = headers.get("expires")
    if expires is not None:  # the run's deadline (orchestrator.submit)
        try:
            datetime.fromisoformat(expires if isinstance(expires, str) and len(expires) <= 64 else "?")
        except ValueError:
            return "headers.expires must be an ISO 8601 time or null"
    return _timelimit_problem(headers.get("timelimit")) or _stamps_problem(headers)


def _timelimit_problem(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        return "headers.timelimit must be a pair [hard, soft]"
    for limit in value:
        if limit is None:
            continue
        number = finite(limit)
        if number is None:
            return "headers.timelimit holds a value that is not a finite number"
        if not 0 < number <= MAX_TIME_LIMIT:
            return f"headers.timelimit values must be in (0, {MAX_TIME_LIMIT:g}]"
    return None


def _stamps_problem(headers: dict[str, Any]) -> str | None:
    stamped = headers.get("stamped_headers")
    if stamped is not None and (
        not isinstance(stamped, list)
        or len(stamped) > MAX_STAMPS
        or not all(isinstance(s, str) and len(s) <= MAX_ID for s in stamped)
    ):
        return f"headers.stamped_headers must be a list of at most {MAX_STAMPS} names or null"
    if headers.get("stamps") is not None and not isinstance(headers["stamps"], dict):
        return "headers.stamps must be an object or null"
    return None


def body_problem(body: Any, arity: int) -> str | None:
    """A protocol 2 body: `[args, kwargs, embed]`, args of this task's arity, no kwargs, and an
    embed that chains nothing (callbacks, errbacks, chain and chord empty)."""
    if not isinstance(body, (bytes, bytearray, str)):
        return f"the body must be bytes, got {type(body).__name__}"
    size = len(body)
    if size > MAX_BODY_BYTES:
        return f"the body is {size} bytes; at most {MAX_BODY_BYTES}"
    try:  # UTF-8 only: json.loads would also take UTF-16/32 bytes, which Celery then cannot decode
        decoded = records.json_loads(bytes(body) if isinstance(body, bytearray) else body)
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    except (ValueError, RecursionError) as exc:
        return f"the body is not JSON: {str(exc)[:200]}"
    if too_deep(decoded):
        return f"the body nests deeper than {MAX_DEPTH} levels"
    if not isinstance(decoded, list) or len(decoded) != 3:
        shape = f"a list of {len(decoded)}" if isinstance(decoded, list) else type(decoded).__name__
        return f"the body must be a list [args, kwargs, embed], got {shape}"
    args, kwargs, embed = decoded
    if not isinstance(args, list) or len(args) != arity:
        return f"args must be a list of {arity} item(s)"
    if kwargs != {}:
        return "kwargs must be an empty object"
    if embed is not None:
        if not isinstance(embed, dict):
            return "embed must be an object or null"
        chained = [k for k in _EMBED_EMPTY if embed.get(k)]
        if chained:
            return f"embed.{chained[0]} must be empty (jobs chain nothing)"
    return None


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON data nests lists and objects more than limit levels deep (no recursion):
    level by level, only the lists and objects of each (a worker screens every message with it)."""
    level = [value] if isinstance(value, (list, dict)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            below += [c for c in (item.values() if isinstance(item, dict) else item) if isinstance(c, (list, dict))]
        level = below
    return False
