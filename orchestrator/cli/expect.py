"""`orchestrator expect`: an expectations file from a run's outcomes (each job's status, a reason to edit)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet.errors import ExitCode, SelectionError
from fleet.settings import Settings
from orchestrator import expectations as expecting
from orchestrator import report, runs
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection


def add(sub: Subcommands) -> None:
    ex = sub.add_parser(
        "expect",
        parents=[connection()],
        help="write an expectations file from a run's outcomes (default: the latest run)",
        description="Write expectations.toml: each job's status in the run, with a reason to edit. Later "
        "runs given --expectations FILE exit 5 only for outcomes that differ (unexpected passes included).",
    )
    ex.add_argument("run_id", nargs="?")
    ex.add_argument("--output", type=Path, metavar="PATH", required=True, help="TOML file to write (atomically)")
    ex.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    run_id = store.resolve_run_id(args.run_id)
    results = runs.view(store, run_id).results
    if not results:
        raise SelectionError(f"run {run_id} has no results yet: nothing to expect")
    report.write_atomic(args.output, expecting.dumps(results, run_id))
    line(f"{args.output}: {len(results)} expectation(s) from run {run_id}")
    return ExitCode.OK
