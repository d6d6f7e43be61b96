"""`orchestrator status`: a run's progress and counts per status (reading never writes)."""

from __future__ import annotations

import argparse

from fleet.errors import ExitCode
from fleet.settings import Settings
from orchestrator import runs, summaries
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection
from orchestrator.output import dumps as strict_json


def add(sub: Subcommands) -> None:
    st = sub.add_parser("status", parents=[connection()], help="progress and counts of a run (default: the latest)")
    st.add_argument("run_id", nargs="?")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    run_id = store.resolve_run_id(args.run_id)
    summaries.catch_up(store)  # derived data only: the run's own keys are never written
    kept = summaries.counts(store, [run_id]).get(run_id)  # a finished run: its counts kept when it was folded
    if kept is not None:
        meta, finished = store.meta(run_id), True
        done, total, counts = kept
    else:
        current = runs.view(store, run_id)  # reading never writes
        meta, finished, counts = current.meta, current.finished, current.counts
        done, total = len(current.results), current.total
    if args.json:
        print(
            strict_json(
                {
                    "run_id": run_id,
                    "finished": finished,
                    "done": done,
                    "total": total,
                    "counts": dict(counts),
                    "started_at": meta["started_at"],
                    "finished_at": meta["finished_at"],
                }
            )
        )
    else:
        state = "finished" if finished else "running"
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no results yet"
        line(f"run {run_id}: {state}, {done}/{total} done ({summary})")
    return ExitCode.OK
