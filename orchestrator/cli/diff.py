"""`orchestrator diff`: status and metric changes between two runs."""

from __future__ import annotations

import argparse

from fleet.errors import ExitCode, SelectionError
from fleet.settings import Settings
from orchestrator import report
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection, finite
from orchestrator.output import dumps as strict_json


def add(sub: Subcommands) -> None:
    d = sub.add_parser("diff", parents=[connection()], help="status and metric changes between two runs")
    d.add_argument(
        "runs", nargs="*", metavar="RUN", help="RUN_A RUN_B (default: the one before the latest, the latest)"
    )
    d.add_argument("--threshold", type=finite, default=0.2, help="relative metric change to list (default 0.2)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    if len(args.runs) == 2:
        a, b = (store.resolve_run_id(x) for x in args.runs)
    elif not args.runs:
        ids = store.run_ids(2)
        if len(ids) < 2:
            raise SelectionError("diff needs two runs; only one is stored")
        b, a = ids
    else:
        raise SelectionError("diff takes two run ids, or none for the latest against the one before")
    data = report.diff(store, a, b, args.threshold)
    if args.json:
        print(strict_json(data, indent=2))
        return ExitCode.OK
    line(f"{a} -> {b}")
    for c in data["status_changes"]:
        line(f"  {c['job_id']}: {c['from']} -> {c['to']} ({c['change']})")
    for c in data["metric_changes"]:
        line(f"  {c['job_id']}: {c['metric']} {c['from']} -> {c['to']} ({c['relative']:+.0%})")
    for c in data["metrics_not_compared"]:
        line(f"  {c['job_id']}: metrics not compared ({c['reason']})")
    if not data["status_changes"] and not data["metric_changes"]:
        print("  no changes")
    return ExitCode.OK
