"""`orchestrator runs`: the stored runs, newest first, with their progress."""

from __future__ import annotations

import argparse

from fleet.errors import ExitCode
from fleet.settings import Settings
from orchestrator import summaries
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection


def add(sub: Subcommands) -> None:
    sub.add_parser("runs", parents=[connection()], help="list the stored runs, newest first").set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    summaries.catch_up(store)
    ids = store.run_ids(50)
    kept = summaries.counts(store, ids)  # finished runs: their counts, kept when they were folded
    for run_id in ids:
        done, total, counts = kept[run_id] if run_id in kept else store.progress(run_id)
        line(f"{run_id}  {done}/{total}  " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return ExitCode.OK
