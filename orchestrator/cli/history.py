"""`orchestrator history`: the runs Redis no longer keeps, read from the archive (fleet.archive),
and the per-job summaries derived again from the runs Redis keeps (--rebuild-summaries)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet import archive
from fleet.errors import BadInput, ExitCode, SelectionError
from fleet.protocol import STATUSES
from fleet.settings import Settings
from orchestrator import summaries
from orchestrator.baselines import iso
from orchestrator.cli.console import connect, line, warn
from orchestrator.cli.options import Subcommands, connection
from orchestrator.output import dumps as strict_json


def add(sub: Subcommands) -> None:
    h = sub.add_parser(
        "history",
        parents=[connection()],
        help="archived runs (older than FLEET_KEEP_RUNS): list them, or read one run's results",
    )
    h.add_argument("run_id", nargs="?", help="an archived run: its results (default: list the archived runs)")
    h.add_argument(
        "--dir", type=Path, metavar="DIR", help="the archive (default $FLEET_ARCHIVE_DIR or HOME/reports/archive)"
    )
    h.add_argument("--family", action="append", default=[], metavar="NAME", help="only this family (repeatable)")
    h.add_argument("--device", action="append", default=[], metavar="DEVICE", help="only this device (repeatable)")
    h.add_argument("--status", action="append", default=[], metavar="STATUS", help="only this status (repeatable)")
    h.add_argument("--json", action="store_true", help="one JSON object per line")
    h.add_argument(
        "--rebuild-summaries",
        action="store_true",
        help="derive the per-job summaries again from the runs Redis keeps (after an upgrade, or to check them)",
    )
    h.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.rebuild_summaries:
        if args.run_id:
            raise SelectionError("--rebuild-summaries takes no run id")
        folded = summaries.rebuild(connect(settings))
        line(f"summaries rebuilt from {folded} run(s)")
        return ExitCode.OK
    unknown = sorted(set(args.status) - set(STATUSES))
    if unknown:
        raise SelectionError(f"--status {', '.join(unknown)}: not a status (one of {', '.join(STATUSES)})")
    folder: Path = args.dir or settings.archive_dir or settings.home / "reports" / "archive"
    if folder.exists() and not folder.is_dir():  # not "no archived runs": the archive is not there
        raise BadInput(f"the archive {folder} is not a directory")
    if args.run_id is None:
        return _list(folder, args)
    # read whole before anything is shown: a file cut short is one error (exit 7), not half a listing;
    # a line that is not a sound result is its corrupt_record row (fleet.records)
    for r in list(archive.results(folder, args.run_id)):
        if args.family and r["family"] not in args.family:
            continue
        if args.device and r["device"] not in args.device:
            continue
        if args.status and r["status"] not in args.status:
            continue
        if args.json:
            print(strict_json(r))
        else:
            error = r["error"]
            why = f" ({error['kind']}: {error['message']})" if error else ""
            line(f"{r['job_id']}  {r['status']}  {r['model_used'] or '—'}{why}")
    return ExitCode.OK


def _list(folder: Path, args: argparse.Namespace) -> int:
    headers = archive.runs(folder, on_bad=warn)  # a file that is no run's archive: one warning, skipped
    if not headers and not args.json:
        line(f"no archived runs in {folder}")
    for h in headers:
        counts = h.get("counts") or {}
        if args.status and not any(counts.get(s) for s in args.status):
            continue
        meta = h["meta"]
        if args.json:
            print(
                strict_json(
                    {
                        "run_id": meta.get("run_id"),
                        "started_at": meta.get("started_at"),
                        "total": h.get("total"),
                        "counts": counts,
                    }
                )
            )
        else:
            shown = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            line(
                f"{meta.get('run_id')}  {iso(meta.get('started_at'))}  {sum(counts.values())}/{h.get('total')}  {shown}"
            )
    return ExitCode.OK
