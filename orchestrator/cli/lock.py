"""`orchestrator lock`: model lock entries from the results of a run that the official Hub vouched
for (fleet/lock.py), written to a TOML file that later runs take with --lock FILE."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleet import lock as locking
from fleet.errors import ExitCode, SelectionError
from fleet.protocol import Status
from fleet.settings import Settings
from orchestrator import report
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection


def add(sub: Subcommands) -> None:
    lk = sub.add_parser(
        "lock",
        parents=[connection()],
        help="write model lock entries from a run's Hub-verified results (default: the latest run)",
        description="Record, for each result whose files the official Hub (or an endpoint the workers trust) "
        "vouched for, the sha256 of every file the check read, keyed by model and revision. Later runs given "
        "--lock FILE are REAL for those bytes offline or from any cache, weights_corrupt for other bytes under "
        "that model and revision, and identity_mismatch for those bytes under another name. An existing "
        "FILE is kept: its entries are updated, not dropped.",
    )
    lk.add_argument("run_id", nargs="?")
    lk.add_argument("--output", type=Path, metavar="PATH", required=True, help="lock TOML file to write (atomically)")
    lk.set_defaults(handler=run)


def from_results(results: Sequence[Mapping[str, Any]], source: str) -> list[dict[str, Any]]:
    """One entry per model and revision whose files the Hub vouched for in these results."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(results, key=lambda r: r["job_id"]):
        ident = r.get("identity")
        if r.get("status") not in (Status.REAL, Status.UNVERIFIED) or not isinstance(ident, dict):
            continue
        if ident.get("anchored_by") != "hub" or not r.get("model_used") or not r.get("revision"):
            continue
        files = ident.get("files") or {}
        entry = {
            "model": r["model_used"],
            "revision": r["revision"],
            "digest": locking.digest(files),
            "files": dict(files),
            "source": f"{source}, job {r['job_id']}: files confirmed by {ident.get('endpoint', 'the Hub')}",
        }
        out[locking.key(entry)] = locking.parse_entry(f"result {r['job_id']}", entry)
    return list(out.values())


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    run_id = store.resolve_run_id(args.run_id)
    built = from_results(store.results(run_id), f"run {run_id}")
    if not built:
        raise SelectionError(f"run {run_id} has no result whose files the Hub vouched for: nothing to lock")
    merged = {locking.key(e): e for e in (locking.load_file(args.output) if args.output.is_file() else [])}
    before = len(merged)
    merged.update({locking.key(e): e for e in built})
    header = f"Model lock entries written by `orchestrator lock {run_id}`. Use with --lock FILE (or $FLEET_LOCK)."
    report.write_atomic(args.output, locking.dumps(list(merged.values()), header))
    entries = "1 entry" if len(built) == 1 else f"{len(built)} entries"
    line(f"{args.output}: {entries} from run {run_id} ({before} already in the file)")
    return ExitCode.OK
