"""The daily schedule: celery beat sends fleet.scheduled_run to the 'control' queue; the task
claims the schedule slot in Redis (SET NX), so at most one run per slot happens however many
beat processes send it, submits every (family, device), waits for the run to finish or reach
its deadline, and keeps the report in Redis and as files (with latest.md and latest.html
pointing at it).

Run it with `orchestrator beat`: celery worker -B on the control queue, in that process, with
the options it was given (no torch needed). The message carries only the slot: what a scheduled
run does is decided by the beat process's own options, never by a message.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery, signals
from celery.schedules import crontab, schedule
from kombu.entity import Queue

from fleet import lock as locking
from fleet.broker import make_app
from fleet.catalog import load_catalog
from fleet.devices import Device
from fleet.errors import FleetError, SelectionError
from fleet.settings import RunSettings, Settings
from fleet.store import ResultStore
from orchestrator import expectations as expecting
from orchestrator import metrics, notify, report
from orchestrator import pins as pinning
from orchestrator.expectations import Expectations
from orchestrator.runs import wait
from orchestrator.submit import submit

CONTROL_QUEUE = "control"
SCHEDULED_RUN_TASK = "fleet.scheduled_run"
DEFAULT_SCHEDULE = "cron:0 6 * * *"  # 06:00 UTC every day


class AlignedInterval(schedule):  # type: ignore[misc]
    """Every N seconds on wall-clock multiples of N, so that independent beat processes fire
    for the same slots (a plain interval schedule starts counting when each beat starts)."""

    def __init__(self, every_s: float) -> None:
        super().__init__(run_every=every_s)
        self.every_s = every_s

    def __reduce__(self) -> tuple[type[AlignedInterval], tuple[float]]:
        return self.__class__, (self.every_s,)  # beat keeps its schedule in a shelve file

    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:
        now = time.time()
        last = last_run_at.timestamp()
        next_slot = (math.floor(last / self.every_s) + 1) * self.every_s
        if now >= next_slot:
            return True, self.every_s - (now % self.every_s)
        return False, next_slot - now


def parse_schedule(spec: str) -> tuple[Any, float]:
    """'cron:M H DOM MON DOW' (UTC) or 'every:SECONDS' -> (celery schedule, slot length in s)."""
    kind, _, value = spec.partition(":")
    if kind == "cron":
        fields = value.split()
        if len(fields) != 5:
            raise SelectionError(f"schedule {spec!r}: a cron schedule has 5 fields (minute hour dom month dow)")
        try:
            return crontab(*fields), 60.0
        except ValueError as exc:
            raise SelectionError(f"schedule {spec!r}: {exc}") from None
    if kind == "every" and re.fullmatch(r"\d+(\.\d+)?", value) and float(value) >= 1:
        return AlignedInterval(float(value)), float(value)
    raise SelectionError(f"schedule {spec!r}: expected 'cron:M H DOM MON DOW' or 'every:SECONDS' (>= 1)")


def slot_name(now: float, slot_s: float) -> str:
    start = math.floor(now / slot_s) * slot_s
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ScheduleOptions:
    """What each scheduled run does; fixed when `orchestrator beat` starts."""

    spec: str
    devices: tuple[Device, ...]
    reports_dir: Path
    catalog: str | None = None
    deadline_s: float = 3600.0
    pins: str | None = None  # known answers on top of the shipped ones
    lock: str | None = None  # model lock on top of the shipped one
    reruns: int = 1  # reruns of a FAILED job (RunSettings.reruns)
    variants: str | None = None  # --variants of every scheduled run (RunSettings.variants)
    expectations: str | None = None  # expectations file, for the report and the alert
    notify: str | None = None  # webhook URL for the alert (never logged)


def publish_report(store: ResultStore, run_id: str, out_dir: Path, expectations: Expectations | None = None) -> Path:
    """Write the run's reports, point latest.md and latest.html at them, refresh fleet.prom."""
    md_path, _json_path, html_path = report.save_run_report(store, run_id, out_dir, expectations=expectations)
    for path in (md_path, html_path):
        link = out_dir / f"latest{path.suffix}"
        tmp = out_dir / f".latest{path.suffix}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.name)
        os.replace(tmp, link)  # atomic: readers see the old or the new report, never none
    report.write_atomic(out_dir / "fleet.prom", metrics.exposition(store, run_id))
    return md_path


def make_beat_app(settings: Settings, options: ScheduleOptions) -> Celery:
    app = make_app(settings=settings)
    sched, slot_s = parse_schedule(options.spec)
    app.conf.task_queues = (*app.conf.task_queues, Queue(CONTROL_QUEUE))  # type: ignore[no-untyped-call]
    app.conf.beat_schedule = {
        "fleet-report": {
            "task": SCHEDULED_RUN_TASK,
            "schedule": sched,
            "args": [slot_s],
            # a message not picked up within its slot is stale: the next slot will run
            "options": {"queue": CONTROL_QUEUE, "expires": slot_s},
        }
    }

    @app.task(name=SCHEDULED_RUN_TASK, acks_late=False)  # type: ignore[untyped-decorator]
    def scheduled_run(slot_s: float, sent_at: float | None = None) -> str:
        return run_slot(settings, options, slot_name(sent_at or time.time(), slot_s))

    return app


@signals.before_task_publish.connect  # type: ignore[untyped-decorator]
def _stamp_send_time(sender: str | None = None, body: Any = None, **_: Any) -> None:
    """Beat's messages carry the time they were sent, so the slot does not depend on when a
    busy control worker gets to them."""
    if sender == SCHEDULED_RUN_TASK and isinstance(body, tuple) and len(body) >= 2 and isinstance(body[1], dict):
        body[1].setdefault("sent_at", time.time())


def run_slot(settings: Settings, options: ScheduleOptions, slot: str) -> str:
    """Claim the slot; if ours, run every family on the configured devices and publish the report."""
    store = ResultStore.from_settings(settings)
    catalog = load_catalog(options.catalog, settings.plugins)
    run_settings = RunSettings(deadline_s=options.deadline_s, reruns=options.reruns, variants=options.variants)
    run_id = f"{slot.replace(':', '').replace('-', '')}-scheduled"
    if not store.registry.claim_slot(slot, run_id):
        return f"slot {slot} already taken by {store.registry.slot_run(slot)}"
    app = make_app(settings=settings)
    pins = pinning.load(options.pins)
    submit(
        store,
        app,
        catalog,
        None,
        list(options.devices),
        run_settings,
        run_id=run_id,
        origin=f"beat {slot}",
        pins=pins,
        lock=locking.load(options.lock),
    )
    wait(store, run_id, poll_s=2.0)
    expected = expecting.load(options.expectations)
    try:
        publish_report(store, run_id, options.reports_dir, expected)
    except (OSError, FleetError):  # the day's files are lost (a full disk), not its alert
        notify.send(options.notify, report.build(store, run_id, expectations=expected))
        raise
    notify.send(options.notify, report.build(store, run_id, expectations=expected))
    return run_id
