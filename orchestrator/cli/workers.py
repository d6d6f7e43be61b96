"""`orchestrator workers`: the live workers, what they serve, whether their consumer works, and
what they did with the jobs they took (received, finished, died, last result: fleet.store.ledger)."""

from __future__ import annotations

import argparse
import time

from fleet.errors import ExitCode
from fleet.settings import Settings, redact_url
from orchestrator import accounting, liveness
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection, finite
from orchestrator.deadletters import lines
from orchestrator.report.markdown import when


def add(sub: Subcommands) -> None:
    wp = sub.add_parser("workers", parents=[connection()], help="list the live workers and what they serve")
    wp.add_argument(
        "--stuck-after",
        type=finite,
        default=liveness.STUCK_AFTER_S,
        metavar="S",
        help=f"a consumer that has not polled the broker for S seconds with a free slot is stuck "
        f"(default {liveness.STUCK_AFTER_S:.0f})",
    )
    wp.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    workers = store.registry.live_workers()
    stats = store.ledger.worker_stats()
    holding = {w.get("name"): w.get("holding") for w in workers}  # jobs held now: no evidence yet
    holes = {
        b["worker"]: b["why"]
        for b in accounting.black_holes(
            [
                {"name": n, "in_flight": holding.get(n) or 0}
                | {k: int(s.get(k, 0)) for k in ("received", "finished", "died")}
                for n, s in stats.items()
            ]
        )
    }
    now = time.time()
    if not workers:
        line(f"no live workers on {redact_url(store.url)}")
    for w in workers:  # heartbeats typed by fleet.records.decode_heartbeat: a malformed field is None, shown "?"
        name = w["name"] if w["name"].isprintable() else repr(w["name"])  # one line per worker
        queues = ",".join(w["queues"]) if w.get("queues") is not None else "?"
        gpus = f"  gpus: {'; '.join(w['gpus'])}" if w.get("gpus") else ""
        since = liveness.stuck_since(w, now, args.stuck_after)
        state = f"stuck since {when(since)}" if since is not None else "consuming"
        s = stats.get(w["name"], {})
        counts = "  ".join(f"{k}={int(s.get(k, 0))}" for k in ("received", "finished", "died"))
        if s.get("duplicate"):  # deliveries of jobs another live process ran (fleet.store.ledger)
            counts += f"  duplicates={int(s['duplicate'])}"
        last = f"last_result={when(s.get('last_result_at'))}"
        hole = f"  BLACK HOLE: {holes[w['name']]}" if w["name"] in holes else ""
        line(
            f"{name}  {state}  queues={queues}  {counts}  {last}  torch={w.get('torch')}  "
            f"transformers={w.get('transformers')}  parent_cuda_initialized={w.get('parent_cuda_initialized')}"
            f"{gpus}{hole}"
        )
    line("\n".join(lines(store)) or "no dead letters")
    return ExitCode.OK
