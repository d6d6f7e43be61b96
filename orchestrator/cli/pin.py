"""`orchestrator pin`: known-answer pins from a run's REAL results, written to a TOML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet.errors import ExitCode, SelectionError
from fleet.settings import Settings
from orchestrator import pins as pinning
from orchestrator import report
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection


def add(sub: Subcommands) -> None:
    pn = sub.add_parser(
        "pin",
        parents=[connection()],
        help="write known-answer pins from a run's REAL results (default: the latest run)",
        description="Record, for each REAL result, its output fingerprint keyed by model, revision, weights "
        "sha256 and device type, with the check's tolerances. Later runs given --pins FILE compare with it: "
        "a mismatch is FAILED known_answer_mismatch.",
    )
    pn.add_argument("run_id", nargs="?")
    pn.add_argument("--output", type=Path, metavar="PATH", required=True, help="pins TOML file to write (atomically)")
    pn.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    run_id = store.resolve_run_id(args.run_id)
    built = pinning.from_results(store.results(run_id), f"run {run_id}")
    if not built:
        raise SelectionError(f"run {run_id} has no REAL result with an output fingerprint: nothing to pin")
    header = f"Known-answer pins written by `orchestrator pin {run_id}`. Use with --pins FILE."
    report.write_atomic(args.output, pinning.dumps(built, header))
    line(f"{args.output}: {len(built)} pin(s) from run {run_id}")
    return ExitCode.OK
