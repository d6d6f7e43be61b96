"""A run_check delivery reads its `expires` header once per distinct text (workers.app.
parse_header_time), and still expires as Celery's own reading says: a message past its run's
deadline is revoked, one before it is not, an unreadable time is refused as before."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery.exceptions import InvalidTaskError
from celery.utils.time import maybe_iso8601
from kombu import Connection

from fleet.broker import RUN_CHECK_TASK
from workers import app as worker_app


def test_a_header_time_reads_as_celerys_own_reading_once_per_text() -> None:
    text = "2031-05-04T03:02:01.123000+00:00"
    first = worker_app.parse_header_time(text)
    assert first == maybe_iso8601(text)
    assert worker_app.parse_header_time(text) is first  # read once: the same (immutable) datetime
    assert worker_app.parse_header_time("2031-05-04T03:02:01+02:00") == maybe_iso8601("2031-05-04T03:02:01+02:00")
    moment = datetime(2031, 1, 1, tzinfo=UTC)
    assert worker_app.parse_header_time(moment) is moment  # not text: as Celery does
    assert worker_app.parse_header_time(None) is None
    for _ in range(2):  # a raise is never cached: raised each time
        with pytest.raises(ValueError):
            worker_app.parse_header_time("not a time")


def _request(expires: Any) -> worker_app.RunCheckRequest:
    """A run_check delivery as the worker's main process builds it from a message."""
    with Connection("memory://") as conn:
        channel = conn.default_channel
        raw = channel.prepare_message(
            json.dumps([[{"job_id": "j"}], {}, {}]),
            content_type="application/json",
            content_encoding="utf-8",
            headers={"id": "t1", "task": RUN_CHECK_TASK, "expires": expires, "timelimit": [None, None]},
        )
        raw["properties"].update(delivery_tag="tag", delivery_info={"exchange": "", "routing_key": "cpu"})
        message = channel.message_to_python(raw)
    return worker_app.RunCheckRequest(message, app=worker_app.app, task=worker_app.run_check)


def test_a_delivery_past_its_runs_deadline_expires_and_one_before_it_does_not() -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    late, early = _request(past), _request(future)
    assert late.expires == maybe_iso8601(past) and early.expires == maybe_iso8601(future)
    assert late.maybe_expire() is True
    assert not early.maybe_expire()
    assert _request(future).expires is early.expires  # the same text: read once
    with pytest.raises(InvalidTaskError):
        _request("2031-13-45T99:00:00")
