"""`orchestrator workers`: the live workers and what they serve."""

from __future__ import annotations

import argparse

from fleet.errors import ExitCode
from fleet.settings import Settings, redact_url
from orchestrator.cli.console import connect, line
from orchestrator.cli.options import Subcommands, connection
from orchestrator.deadletters import lines


def add(sub: Subcommands) -> None:
    sub.add_parser("workers", parents=[connection()], help="list the live workers and what they serve").set_defaults(
        handler=run
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    store = connect(settings)
    workers = store.registry.live_workers()
    if not workers:
        line(f"no live workers on {redact_url(store.url)}")
    for w in workers:
        gpus = f"  gpus: {'; '.join(w['gpus'])}" if w.get("gpus") else ""
        line(
            f"{w['name']}  queues={','.join(w['queues'])}  torch={w.get('torch')}  "
            f"transformers={w.get('transformers')}  parent_cuda_initialized={w.get('parent_cuda_initialized')}{gpus}"
        )
    line("\n".join(lines(store)) or "no dead letters")
    return ExitCode.OK
