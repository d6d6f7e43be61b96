"""`orchestrator submit`: enqueue a selection's jobs on a fleet's Redis; with --wait, follow the run."""

from __future__ import annotations

import argparse

from fleet.errors import ExitCode
from fleet.settings import Settings
from orchestrator import architectures, runs, verdicts
from orchestrator.cli import selection
from orchestrator.cli.console import connect as _store
from orchestrator.cli.console import say, warn
from orchestrator.cli.options import Subcommands, connection


def add(sub: Subcommands) -> None:
    s = sub.add_parser(
        "submit",
        parents=[connection(), selection.parent()],
        help="enqueue (family, device) jobs; print the run id",
        description="Expand the selection into (family, device) jobs under a new run id and enqueue them.",
    )
    s.add_argument("--devices", default="cpu", help="comma-separated: cpu, cuda, cuda:N (default: cpu)")
    s.add_argument(
        "--wait", action="store_true", help="follow the run with a progress bar; exit 5 if any job FAILED or was LOST"
    )
    s.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from fleet.broker import make_app
    from orchestrator.submit import ProgressBar, unserved_devices

    chosen = selection.prepare(
        args, settings, lambda: architectures.published_listing(_store(settings).registry), args.devices
    )
    store = _store(settings)
    for device in unserved_devices(store, chosen.devices):
        warn(f"no live worker serves {device}; its jobs will end SKIPPED at the deadline unless one starts")
    app = make_app(settings=settings)
    run_id = chosen.submit(store, app, args.order)
    print(run_id, flush=True)
    if not args.wait:
        return ExitCode.OK
    counts = runs.wait(store, run_id, ProgressBar())
    code = say(verdicts.conclude(store, run_id, counts, chosen.expected, args.notify))
    # Devices nobody served: the run did not test what was asked, so --wait does not exit 0.
    unserved = verdicts.unserved(run_id, store.results(run_id))
    return say(unserved) if unserved is not None else code
