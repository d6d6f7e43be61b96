"""`orchestrator run`: the embedded fleet (a private Redis and this machine's workers) runs a
selection, writes its report, and stops."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fleet import witness
from fleet.errors import BadInput
from fleet.settings import Settings
from fleet.store import ResultStore
from orchestrator import architectures
from orchestrator.cli import selection
from orchestrator.cli.console import line, note, say, warn
from orchestrator.cli.options import Subcommands, whole
from orchestrator.output import writable_dir

MAX_CONCURRENCY = 256


def add(sub: Subcommands) -> None:
    r = sub.add_parser(
        "run",
        parents=[selection.parent()],
        help="embedded fleet: private Redis + local workers, then a report",
        description="Start a private Redis and this machine's workers, run the selection, write "
        "the report (markdown and JSON), stop everything.",
    )
    r.add_argument("--devices", help="default: cpu, plus cuda when a GPU is visible")
    r.add_argument(
        "--concurrency",
        type=whole(1, MAX_CONCURRENCY),
        metavar="N",
        help="CPU pool processes (default: one per core for --architectures, whose seeded tiny models are "
        "interpreter-bound; otherwise cores / 2, each job using two cores' torch threads)",
    )
    r.add_argument(
        "--state-dir",
        type=Path,
        help="Redis data, logs and reports (default $FLEET_HOME or ~/.local/state/model-fleet)",
    )
    r.add_argument("--output-dir", type=Path, help="where the report files go (default STATE_DIR/reports)")
    r.add_argument(
        "--trust-remote-code", action="store_true", help="start the workers with --trust-remote-code (default: off)"
    )
    r.add_argument("--allow-pickle", action="store_true", help="start the workers with --allow-pickle (default: off)")
    r.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="start the workers with --allow-path DIR (repeatable; catalogs with local paths need it)",
    )
    r.add_argument(
        "--trust-endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="start the workers with --trust-endpoint URL: this HF_ENDPOINT vouches for identity like the "
        "official Hub (repeatable; default: only https://huggingface.co)",
    )
    r.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from fleet.launcher import visible_gpus
    from orchestrator.embedded import EmbeddedFleet

    gpus = visible_gpus()
    chosen = selection.prepare(
        args, settings, architectures.local_listing, args.devices or ("cpu,cuda" if gpus else "cpu")
    )
    state = _state_dir(args.state_dir or settings.home)
    # the reports are written after every job has run: a folder they cannot go to is an error now
    out = writable_dir(args.output_dir or state / "reports", "the output directory")
    worker_devices = ",".join(["cpu"] + (["cuda"] if gpus and any(d.is_gpu for d in chosen.devices) else []))
    flags = ["--trust-remote-code"] * args.trust_remote_code + ["--allow-pickle"] * args.allow_pickle
    for raw in args.allow_path:
        if not Path(raw).expanduser().is_dir():
            raise BadInput(f"--allow-path {raw}: no such directory")
        flags += ["--allow-path", str(Path(raw).expanduser().resolve())]
    for raw in args.trust_endpoint:
        flags += ["--trust-endpoint", witness.normalize(raw)]  # a bad URL is exit 2 before anything starts
    note(f"starting Redis and workers ({worker_devices}) in {state}")
    concurrency = args.concurrency or ((os.cpu_count() or 1) if args.architectures else None)
    fleet = EmbeddedFleet(state, worker_devices, worker_flags=flags, concurrency=concurrency, wait=False)
    with fleet:
        # The workers import torch and transformers for seconds: what the submit, the wait and
        # the report need is imported meanwhile, off the critical path.
        from fleet.broker import make_app
        from orchestrator import report, runs, verdicts
        from orchestrator.submit import ProgressBar

        fleet_settings = settings.with_redis_url(fleet.url)
        store = ResultStore.from_settings(fleet_settings)
        app = make_app(settings=fleet_settings)
        fleet.wait_for_workers()
        run_id = chosen.submit(store, app, args.order, origin="embedded")
        jobs = len(chosen.catalog.select(chosen.families)) * len(chosen.devices)
        note(f"run {run_id}: {jobs} job(s)")
        # This fleet is complete: jobs for a device it has no worker for end SKIPPED now.
        if runs.skip_unserved(store, run_id, store.registry.served_queues()):
            warn("no GPU visible here; cuda jobs end SKIPPED")
        # a private Redis: polled often; the workers all gone (one killed), the rest ends LOST now
        counts = runs.wait(store, run_id, ProgressBar(), poll_s=0.05, gone=fleet.workers_gone)
        gone = fleet.workers_gone()
        if gone:
            warn(gone)
        # Every result is in: the workers stop now (at once when they hold no message), while
        # the report is written.
        fleet.finish()
        try:
            paths = report.save_run_report(store, run_id, out, expectations=chosen.expected)
        except BadInput as exc:  # a disk that filled during the run: the verdict and alert are still given
            say(verdicts.conclude(store, run_id, counts, chosen.expected, args.notify))
            raise BadInput(f"run {run_id}: no report file written: {exc.message}") from None
        code = say(verdicts.conclude(store, run_id, counts, chosen.expected, args.notify))
    for path in paths:
        line(str(path))
    return code


def _state_dir(path: Path) -> Path:
    """The embedded run's state directory: created private (0700), or a one-line error."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            raise BadInput(f"--state-dir {path} is not a directory")
        os.chmod(path, 0o700)
        probe = path / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot use {path} as the state directory: {exc.strerror or exc}") from None
    return path
