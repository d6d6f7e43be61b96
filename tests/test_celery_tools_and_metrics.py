"""Celery's own tools and Prometheus on a real fleet: task events reach an event receiver (what
`celery events`, Flower and celery-exporter read), `celery -A fleet.broker inspect ping` answers
from a real worker, and the metrics text parses with Prometheus's own parser and says what the
store holds."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator import metrics
from orchestrator.runs import wait
from orchestrator.submit import submit
from tests.helpers import ROOT, orchestrator
from tests.test_report import _fixture


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_task_events_and_inspect_ping_on_a_real_worker(redis_url: str, start_worker) -> None:
    start_worker(redis_url, name="evw")
    app = make_app(redis_url)
    events: list[dict[str, Any]] = []
    ready = threading.Event()

    def capture() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": events.append})
            ready.set()
            for _ in receiver.itercapture(limit=None, timeout=None, wakeup=False):
                if stop.is_set():
                    break

    stop = threading.Event()
    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    assert ready.wait(10)
    time.sleep(1.0)  # the receiver's subscription is in place before anything is sent
    store = ResultStore(redis_url)
    run_id = submit(store, app, load_catalog(), ["t5"], ["cpu"], RunSettings(repeats=1))
    wait(store, run_id)
    deadline = time.monotonic() + 20
    wanted = {"task-sent", "task-received", "task-started", "task-succeeded"}
    while time.monotonic() < deadline and not wanted <= {e["type"] for e in events}:
        time.sleep(0.2)
    stop.set()
    tasks = [e for e in events if e["type"].startswith("task-")]
    assert wanted <= {e["type"] for e in tasks}, sorted({e["type"] for e in events})
    sent = next(e for e in tasks if e["type"] == "task-sent")
    assert sent["name"] == "fleet.run_check" and sent["queue"] == "cpu"
    assert len({e["uuid"] for e in tasks}) == 1  # one job, one task id across its events

    # Celery's own CLI, with the torch-free app module, answers from the worker
    env = dict(os.environ, FLEET_REDIS_URL=redis_url, PYTHONPATH=str(ROOT))
    celery = Path(sys.executable).with_name("celery")
    res = subprocess.run(
        [str(celery), "-A", "fleet.broker", "inspect", "ping", "--timeout", "5"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "evw" in res.stdout and "pong" in res.stdout


def test_metrics_count_jobs_regressions_and_waiting_queue(redis_url: str) -> None:
    store = ResultStore(redis_url)
    run_id = _fixture(store)  # run-2: REAL 2, SYNTHETIC 2, FAILED 3, one regression against run-1
    got = _samples(metrics.exposition(store, run_id, now=1_790_086_400.0 + 500))
    jobs = {dict(labels)["status"]: v for (name, labels), v in got.items() if name == "fleet_run_jobs"}
    assert jobs == {
        "REAL": 2,
        "UNVERIFIED": 0,
        "SYNTHETIC": 2,
        "FLAKY": 0,
        "SKIPPED": 0,
        "FAILED": 3,
        "LOST": 0,
        "pending": 0,
    }
    assert got[("fleet_run_regressions", ())] == 1
    assert got[("fleet_run_finished", ())] == 1
    assert got[("fleet_run_duration_seconds", ())] == 120  # the fixture finishes 120 s after it starts
    info = next(labels for (name, labels), _ in got.items() if name == "fleet_run_info")
    assert dict(info)["run_id"] == "run-2"

    # a cuda job with no GPU worker waits in the gpu queue: pending, and counted in the queue length
    app = make_app(redis_url)
    waiting = submit(store, app, load_catalog(), ["t5"], ["cuda"], RunSettings(repeats=1, deadline_s=600))
    res = orchestrator("metrics", waiting, "--redis-url", redis_url)
    assert res.returncode == 0, res.stderr
    got = _samples(res.stdout)
    assert got[("fleet_queue_length", (("queue", "gpu"),))] == 1
    assert got[("fleet_queue_length", (("queue", "cpu"),))] == 0
    assert got[("fleet_run_jobs", (("status", "pending"),))] == 1
    assert got[("fleet_run_finished", ())] == 0
