"""`orchestrator metrics`: a run's Prometheus metrics (jobs by status, duration, queue lengths)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet.settings import Settings
from orchestrator import metrics
from orchestrator.cli.console import connect, emit
from orchestrator.cli.options import Subcommands, connection


def add(sub: Subcommands) -> None:
    mt = sub.add_parser(
        "metrics",
        parents=[connection()],
        help="Prometheus metrics of a run (default: the latest): jobs by status, duration, queue lengths",
    )
    mt.add_argument("run_id", nargs="?")
    mt.add_argument("--output", type=Path, metavar="PATH", help="write here (atomically), e.g. a .prom textfile")
    mt.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    return emit(metrics.exposition(store, store.resolve_run_id(args.run_id)), args.output)
