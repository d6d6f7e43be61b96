"""A job message stands for a job of its run only when it carries the job the run stored at submit
(its message-only fields aside: sent_at, and a rerun number the run published). Whoever can push
onto a queue could otherwise decide a job's outcome: a copy with other content (another family
spec, more repeats, a trust flag) pushed first is run as that job, its result stored as the job's,
and the real message that comes while it runs finds the job's lease and runs nothing. Real Redis,
a real worker; the copies are pushed as a hostile sender would (send_task onto the queue)."""

from __future__ import annotations

import copy
import time
from typing import Any

from fleet.broker import RUN_CHECK_TASK, make_app
from fleet.catalog import load_catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from orchestrator.submit import plan_jobs
from tests.helpers import raw_redis
from tests.test_faults import wait_until
from tests.test_poison import assert_still_serving, settled


def _meta(run_id: str, total: int = 1) -> dict[str, Any]:
    start = time.time() - 10
    return {"run_id": run_id, "started_at": start, "deadline": start + 3600, "deadline_s": 3600.0, "total": total}


def _open_run(store: ResultStore, run_id: str, jobs: list[dict[str, Any]]) -> None:
    store.create_run(_meta(run_id, len(jobs)), jobs)  # type: ignore[arg-type]


def test_copies_that_are_not_the_runs_job_are_dead_lettered_and_the_real_job_runs(redis_url: str, start_worker) -> None:
    w = start_worker(redis_url)
    store, app = ResultStore(redis_url), make_app(redis_url)
    pid = w.celery_main().pid
    run_id = "copies-1"
    (job,) = plan_jobs(run_id, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    _open_run(store, run_id, [job])
    other_spec = copy.deepcopy(job)
    other_spec["family_spec"]["candidates"] = other_spec["family_spec"]["candidates"][:1]
    other_spec["family_spec"]["candidates"][0]["id"] = "someone/else"
    copies = {
        "another family spec": other_spec,
        "more repeats": {**job, "repeats": 2},
        "a field the run never had": {**job, "extra": True},
        "a field left out": {k: v for k, v in job.items() if k != "max_attempts"},
        "a rerun never published": {**job, "rerun": 1},
        "a bad sent_at": {**job, "sent_at": -5.0},
    }
    for forged in copies.values():
        app.send_task(RUN_CHECK_TASK, args=[forged], queue="cpu")
    n = len(copies)
    wait_until(lambda: store.transport.dead_letter_count() == n, timeout=120, what=f"{n} dead letters")
    reasons = [d["reason"] for d in store.transport.dead_letters(n)]
    assert sum("it differs in family_spec" in r for r in reasons) == 1, reasons
    assert sum("it differs in repeats" in r for r in reasons) == 1, reasons
    assert sum("it differs in extra" in r for r in reasons) == 1, reasons
    assert sum("bad job: max_attempts" in r for r in reasons) == 1, reasons  # refused before compared
    assert sum("it claims rerun 1, which the run never published" in r for r in reasons) == 1, reasons
    assert sum("sent_at" in r for r in reasons) == 1, reasons
    # Nothing of the job was counted, taken or answered by the copies.
    raw = raw_redis(redis_url)
    assert store.result_count(run_id) == 0 and not store.is_finished(run_id)
    assert raw.hgetall(keys.run(run_id, "attempts")) == {}
    assert not list(raw.scan_iter(keys.lease(run_id, "*")))
    # The run's own job then runs, and its result is the run's job's: even sent with a time limit
    # of its sender's choosing (a copy pushed first with half a second would have ended the job
    # FAILED timeout, and its reruns with it): the worker keeps the job's own limit.
    app.send_task(
        RUN_CHECK_TASK, args=[{**job, "sent_at": time.time()}], queue="cpu", soft_time_limit=0.5, time_limit=1
    )
    wait_until(lambda: store.is_finished(run_id), timeout=120, what="the real job's result")
    (result,) = store.results(run_id)
    assert result["status"] in ("REAL", "SYNTHETIC"), result
    assert result["model_used"] != "someone/else" and result["delivery"] == 1
    wait_until(lambda: settled(store), timeout=30, what="nothing requeued")
    assert_still_serving(store, redis_url, w, pid)


def test_begin_refuses_a_copy_before_counting_anything(redis_url: str) -> None:
    """The store's side alone: begin_delivery with the message's job compares it in the same
    round trip, and refuses a copy whose fields differ (nested ones included) without counting."""
    import pytest

    from fleet.errors import NotTheRunsJob

    store = ResultStore(redis_url)
    run_id = "copies-2"
    (job,) = plan_jobs(run_id, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    _open_run(store, run_id, [job])
    nested = copy.deepcopy(job)
    nested["family_spec"]["candidates"][0]["trust_remote_code"] = True
    with pytest.raises(NotTheRunsJob, match="it differs in family_spec"):
        store.begin_delivery(run_id, job["job_id"], claimed=nested)
    assert store.attempts(run_id) == {}
    # Values JSON decoders may take as equal are different jobs: {} is not [], 2**53 + 1 is not 2**53.
    for field, stored_value, copied in (("pins", [], {}), ("repeats", 2**53, 2**53 + 1)):
        store.create_run({**_meta(f"{run_id}-{field}")}, [{**job, "run_id": f"{run_id}-{field}", field: stored_value}])
        with pytest.raises(NotTheRunsJob, match=f"it differs in {field}"):
            store.begin_delivery(
                f"{run_id}-{field}", job["job_id"], claimed={**job, "run_id": f"{run_id}-{field}", field: copied}
            )
    # The job as stored (its JSON re-read and re-encoded) is the run's job: counted.
    assert store.begin_delivery(run_id, job["job_id"], claimed=copy.deepcopy(job))[:2] == (False, 1)
