"""`orchestrator beat`: celery beat plus the control worker that submits and reports scheduled runs."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from fleet import lock as locking
from fleet.broker import refuse_remote_control
from fleet.catalog import load_catalog
from fleet.devices import parse_devices
from fleet.errors import ExitCode
from fleet.jobs import MAX_LOCK
from fleet.settings import Settings
from orchestrator import expectations as expecting
from orchestrator import notify
from orchestrator import pins as pinning
from orchestrator.cli.console import connect, note
from orchestrator.cli.options import (
    LOCK_HELP,
    NOTIFY_HELP,
    PINS_HELP,
    VARIANTS_HELP,
    Subcommands,
    connection,
    deadline,
    reruns,
    variants,
)
from orchestrator.output import writable_dir


def add(sub: Subcommands) -> None:
    b = sub.add_parser(
        "beat",
        parents=[connection()],
        help="run the schedule: celery beat plus the control worker that submits and reports",
        description="Run celery beat and the control worker (queue 'control') in this process. Each schedule "
        "slot gives at most one run, however many beat processes run; the report is kept in Redis and in "
        "REPORTS_DIR (md, json, html), with latest.md and latest.html pointing at the newest and fleet.prom "
        "holding its metrics.",
    )
    b.add_argument(
        "--schedule", default=None, help="'cron:M H DOM MON DOW' in UTC (default 'cron:0 6 * * *') or 'every:SECONDS'"
    )
    b.add_argument("--devices", default="cpu", help="devices of the scheduled runs (default: cpu)")
    b.add_argument("--catalog", metavar="PATH", help="catalog TOML file (default: the one shipped)")
    b.add_argument("--reports-dir", type=Path, help="default $FLEET_REPORTS_DIR or STATE_DIR/reports")
    b.add_argument("--deadline", type=deadline, default=3600.0, metavar="S", help="run deadline (default 3600)")
    b.add_argument("--state-dir", type=Path, help="where the beat schedule file lives")
    b.add_argument("--pins", metavar="FILE", help=PINS_HELP)
    b.add_argument("--lock", metavar="FILE", help=LOCK_HELP)
    b.add_argument("--reruns", type=reruns, default=1, metavar="N", help="reruns of a FAILED job (default 1)")
    b.add_argument("--variants", type=variants, metavar="LIST", help=VARIANTS_HELP)
    b.add_argument("--expectations", metavar="FILE", help="expected outcomes, for the reports and alerts")
    b.add_argument("--notify", metavar="URL", help=NOTIFY_HELP)
    b.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.schedule import CONTROL_QUEUE, DEFAULT_SCHEDULE, ScheduleOptions, make_beat_app

    state = args.state_dir or settings.home
    pins_path = args.pins or settings.pins
    lock_path = args.lock or settings.lock
    expecting.load(args.expectations)  # a bad file is an error now, not at the first scheduled run
    options = ScheduleOptions(
        spec=args.schedule or DEFAULT_SCHEDULE,
        reruns=args.reruns,
        variants=args.variants,
        expectations=str(Path(args.expectations).resolve()) if args.expectations else None,
        notify=notify.check_url(args.notify),
        devices=tuple(parse_devices(args.devices)),
        reports_dir=args.reports_dir or state / "reports",
        catalog=str(Path(args.catalog).resolve()) if args.catalog else None,
        deadline_s=args.deadline,
        pins=str(Path(pins_path).resolve()) if pins_path else None,
        lock=str(Path(lock_path).resolve()) if lock_path else None,
    )
    load_catalog(options.catalog, settings.plugins)
    pinning.load(options.pins)  # a bad pins file is an error now, not at the first scheduled run
    locking.for_job(locking.load(options.lock), (), MAX_LOCK)  # so is a bad lock file, or one too large for a job
    # the schedule file and every day's reports go here: a folder that cannot take them is an
    # error now, not at the first scheduled run (whose report and alert it would lose)
    writable_dir(state, "the state directory")
    writable_dir(options.reports_dir, "the reports directory")
    app = make_beat_app(settings, options)  # checks the schedule
    connect(settings)
    name = f"control-{os.getpid()}@{socket.gethostname()}"
    note(f"beat on schedule {options.spec!r} (UTC), devices {args.devices}")
    refuse_remote_control()  # read-only inspect commands only (fleet.broker)
    app.worker_main(
        [
            "worker",
            "-B",
            "-Q",
            CONTROL_QUEUE,
            "-c",
            "2",
            "-n",
            name,
            "--schedule-filename",
            str(state / f"beat-{os.getpid()}.db"),
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ]
    )
    return ExitCode.OK
