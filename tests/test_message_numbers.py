"""Numbers and ids in a job message that a hostile sender chooses: an integer too large for a
float (JSON has integers of any size), a sent_at out of time, and a made-up job id of a real run.
None of them may stop a worker, go unrecorded, or count towards a run's end."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from fleet.broker import RUN_CHECK_TASK, make_app
from fleet.catalog import load_catalog
from fleet.envelopes import payload_problem
from fleet.errors import ErrorKind, UnknownJob
from fleet.jobs import job_problem
from fleet.messages import message_problem
from fleet.numbers import CLOCK_SKEW_S, MAX_TIME, finite
from fleet.protocol import Status, base_result, terminal_result
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from orchestrator import accounting, runs
from orchestrator.submit import plan_jobs
from tests.helpers import raw_redis
from tests.test_envelopes import envelope
from tests.test_faults import wait_until
from tests.test_poison import assert_still_serving, headers, publish, settled
from workers.screen import TASKS

BIG = json.loads("1" + "0" * 400)  # 10**400, as json.loads gives it


def _job(run_id: str = "r1") -> dict[str, Any]:
    (job,) = plan_jobs(run_id, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    return job


def test_finite_never_raises() -> None:
    assert finite(3) == 3.0 and finite(2.5) == 2.5
    for value in (BIG, -BIG, math.nan, math.inf, -math.inf, True, "1", None, [1]):
        assert finite(value) is None, value


@pytest.mark.parametrize("key", ["sent_at", "time_limit_s", "repeats", "max_attempts", "memory_limit_mb"])
@pytest.mark.parametrize("value", [BIG, -BIG], ids=["big", "minus-big"])
def test_a_job_number_beyond_float_range_is_refused(key: str, value: int) -> None:
    job = _job()
    if key == "memory_limit_mb":
        job["family_spec"][key] = value
    else:
        job[key] = value
    problem = job_problem(job)
    assert problem is not None and key in problem, problem


def test_message_and_envelope_numbers_beyond_float_range_are_refused() -> None:
    body = json.dumps([[_job()], {}, None]).encode()
    for limits in ([BIG, None], [None, BIG], [-BIG, None]):
        problem = message_problem(headers(timelimit=limits), body, "application/json", "utf-8", TASKS)
        assert problem is not None and "timelimit" in problem, (limits, problem)
    problem = payload_problem(envelope("big-priority", properties={"priority": BIG}))
    assert problem is not None and "priority" in problem


@pytest.mark.parametrize(
    "sent_at",
    [-1e308, -5, 0, 1e308, MAX_TIME + 1, "future", math.nan, math.inf, "2026-01-01", True],
)
def test_sent_at_out_of_time_is_refused_and_never_copied(sent_at: Any) -> None:
    if sent_at == "future":
        sent_at = time.time() + CLOCK_SKEW_S + 3600
    job = {**_job(), "sent_at": sent_at}
    problem = job_problem(job)
    assert problem is not None and "sent_at" in problem, (sent_at, problem)
    refused = terminal_result(job, Status.FAILED, ErrorKind.BAD_JOB, f"refused: {problem}")
    assert "sent_at" not in refused
    json.dumps(refused, allow_nan=False)  # nothing a strict JSON reader would refuse


def test_sent_at_within_time_is_kept() -> None:
    for sent_at in (time.time() - 86400, time.time(), time.time() + 600):
        job = {**_job(), "sent_at": sent_at}
        assert job_problem(job) is None
        assert base_result(job)["sent_at"] == sent_at  # type: ignore[typeddict-item]


def _open_run(store: ResultStore, run_id: str, jobs: list[dict[str, Any]]) -> None:
    start = time.time() - 10
    meta = {"run_id": run_id, "started_at": start, "deadline": start + 3600, "deadline_s": 3600.0, "total": len(jobs)}
    store.create_run(meta, jobs)  # type: ignore[arg-type]


def test_a_result_for_a_job_the_run_never_had_is_refused(redis_url: str) -> None:
    store = ResultStore(redis_url)
    run_id = "stray-store"
    jobs = [{**_job(run_id), "job_id": f"t5@cpu-{n}"} for n in ("a", "b")]
    _open_run(store, run_id, jobs)
    first = base_result(jobs[0])  # type: ignore[arg-type]
    first.update(status="REAL", worker="w", started_at=time.time(), finished_at=time.time())
    assert store.put_result(first)
    ghost = terminal_result({**jobs[0], "job_id": "ghost@cpu"}, Status.FAILED, ErrorKind.BAD_JOB, "refused")  # type: ignore[typeddict-item]
    with pytest.raises(UnknownJob, match="'ghost@cpu' is not a job of run 'stray-store'"):
        store.put_result(ghost, only_if_absent=True)
    with pytest.raises(UnknownJob):
        store.begin_attempt(run_id, "ghost@cpu")
    raw = raw_redis(redis_url)
    assert not raw.hexists(keys.run(run_id, "results"), "ghost@cpu")
    assert not raw.hexists(keys.run(run_id, "attempts"), "ghost@cpu")
    assert not store.is_finished(run_id) and store.result_count(run_id) == 1
    # A stray result written past the script (as a hostile writer could) completes nothing.
    store.write_results(run_id, [ghost])
    view = runs.view(store, run_id)
    acc = accounting.account(view.meta, view.results, view.total, view.finished, job_ids=store.job_ids(run_id))
    c = acc["completeness"]
    assert (c["final"], c["asked"], c["pending"], c["complete"], c["stray"]) == (1, 2, 1, False, ["ghost@cpu"])
    assert "1 of 2 jobs" in (accounting.headline(acc) or "")
    # The run's own jobs still finish it; a late result of a known job is still kept as late.
    second = base_result(jobs[1])  # type: ignore[arg-type]
    second.update(status="REAL", worker="w", started_at=time.time(), finished_at=time.time())
    raw.hdel(keys.run(run_id, "results"), "ghost@cpu")
    assert store.put_result(second) and store.is_finished(run_id)
    assert not store.put_result(second) and len(store.late_results(run_id)) == 1
    # A run that is gone (withdrawn) is not an unknown job: nothing to run, nothing raised.
    assert store.begin_attempt("no-such-run", "t5@cpu") == (True, 1)


def test_a_worker_refuses_hostile_numbers_and_made_up_jobs(redis_url: str, start_worker) -> None:
    w = start_worker(redis_url)
    store, app = ResultStore(redis_url), make_app(redis_url)
    pid = w.celery_main().pid
    run_id = "hostile-1"
    job = _job(run_id)
    _open_run(store, run_id, [job])
    # 1. A timelimit header of 10**400: the worker used to exit ("Unrecoverable error") and the
    #    message came back to the next one.
    publish(redis_url, json.dumps([[job], {}, None]), headers(timelimit=[BIG, None]))
    # 2. A made-up job id of the real run, well formed, and one refused for its sent_at.
    app.send_task(RUN_CHECK_TASK, args=[{**job, "job_id": "ghost@cpu"}], queue="cpu")
    app.send_task(RUN_CHECK_TASK, args=[{**job, "job_id": "ghost2@cpu", "sent_at": "x"}], queue="cpu")
    wait_until(lambda: store.transport.dead_letter_count() == 3, timeout=120, what="three dead letters")
    wait_until(lambda: settled(store), timeout=30, what="nothing requeued")
    reasons = sorted(d["reason"] for d in store.transport.dead_letters(10))
    assert any("timelimit" in r for r in reasons), reasons
    assert any("'ghost@cpu' is not a job of run 'hostile-1'" in r and "sent_at" not in r for r in reasons), reasons
    assert any("'ghost2@cpu' is not a job of run" in r and "sent_at" in r for r in reasons), reasons
    assert store.result_count(run_id) == 0 and not store.is_finished(run_id)
    assert not raw_redis(redis_url).hexists(keys.run(run_id, "attempts"), "ghost@cpu")
    # 3. The run's own job with a sent_at of 10**400 is refused, dead-lettered: what is bad is what
    #    the message added (its sent_at), not the job the run stored, so it is not the job's result.
    app.send_task(RUN_CHECK_TASK, args=[{**job, "sent_at": BIG}], queue="cpu")
    wait_until(lambda: store.transport.dead_letter_count() == 4, timeout=60, what="the refusal dead-lettered")
    assert "sent_at" in store.transport.dead_letters(1)[0]["reason"]
    assert store.result_count(run_id) == 0 and not store.is_finished(run_id)
    assert_still_serving(store, redis_url, w, pid)
    log = w.log.read_text()
    assert "Unrecoverable error" not in log and "OverflowError" not in log, log[-3000:]
