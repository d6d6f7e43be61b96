"""Shared by the third pass's scripts (not a reproduction itself): a run of one real job created
as orchestrator.submit records it (ResultStore.create_run, the job as JSON), and queue entries
built by the orchestrator's own message builder (orchestrator.publish.RunMessages), optionally
with the job or the Celery headers changed, pushed with LPUSH as whoever can write a queue would.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.jobs import stored_text
from fleet.protocol import now
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys, new_run_id
from orchestrator.publish import RunMessages
from orchestrator.submit import plan_jobs

URL = os.environ["FLEET_REDIS_URL"]
store = ResultStore(URL)
app = make_app(URL)


def new_run(family: str = "minilm", pins: list[dict[str, Any]] | None = None, **settings: Any) -> dict[str, Any]:
    """One job of `family` on cpu, recorded as a submit records it; returns the job."""
    run_id = new_run_id()
    kwargs = {"pins": pins} if pins is not None else {}
    (job,) = plan_jobs(run_id, load_catalog(), [family], ["cpu"], RunSettings(**settings), **kwargs)
    started = now()
    meta = {"run_id": run_id, "started_at": started, "deadline": started + 900, "deadline_s": 900, "total": 1}
    meta |= {"families": [family], "devices": ["cpu"], "catalog": "shipped", "origin": "adv3"}
    store.create_run(meta, [job], {job["job_id"]: stored_text(job)})
    return job


def entry(
    job: dict[str, Any], headers: dict[str, Any] | None = None, text: str | None = None, body_job: str | None = None
) -> bytes:
    """The queue entry the orchestrator writes for `job` (its text: `text`, else json.dumps; the
    builder adds `"sent_at": now`), with `headers` merged into the Celery headers; body_job: the
    task's argument as this exact JSON text instead (no sent_at added)."""
    with app.connection_for_write() as conn:
        msgs = RunMessages(app, datetime.fromtimestamp(time.time() + 900, UTC), conn.default_channel)
        raw = msgs.task(job, text if text is not None else stored_text(job), uuid.uuid4().hex, uuid.uuid4().hex)
    if not headers and body_job is None:
        return raw
    envelope = json.loads(raw)
    envelope["headers"].update(headers or {})
    if body_job is not None:
        _, kwargs, embed = json.loads(base64.b64decode(envelope["body"]))
        body = "[[" + body_job + "], " + json.dumps(kwargs) + ", " + json.dumps(embed) + "]"
        envelope["body"] = base64.b64encode(body.encode()).decode()
    return json.dumps(envelope).encode()


def push(*entries: bytes, queue: str = "cpu") -> None:
    """LPUSH each entry in turn: the first pushed is the first consumed (BRPOP takes the right end)."""
    for e in entries:
        store._r.lpush(queue, e)


def settle(run_id: str, job_id: str, timeout_s: float = 240.0) -> dict[str, Any] | None:
    """Wait for the job's result and for the queue and kombu's unacked to drain; the result or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = store._r.llen("cpu") or store._r.hlen(keys.UNACKED)
        result = store._r.hget(keys.run(run_id, "results"), job_id)
        if result is not None and not busy:
            time.sleep(2)  # a copy still in a pool process lands its refusal
            return json.loads(store._r.hget(keys.run(run_id, "results"), job_id))
        time.sleep(0.5)
    result = store._r.hget(keys.run(run_id, "results"), job_id)
    return None if result is None else json.loads(result)


def dead_letters_of(run_id: str) -> list[dict[str, Any]]:
    return [d for d in store.transport.dead_letters(200) if run_id in json.dumps(d)]


def outcome(result: dict[str, Any] | None) -> str:
    if result is None:
        return "no result"
    kind = (result.get("error") or {}).get("kind")
    return f"{result['status']}" + (f" ({kind}: {str(result['error'].get('message'))[:120]})" if kind else "")
