"""`orchestrator report`: render a run's report (markdown, JSON, JUnit or HTML) to stdout or a file."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from fleet.errors import SelectionError
from fleet.settings import MAX_KEEP_RUNS, Settings
from orchestrator import accounting, report
from orchestrator import expectations as expecting
from orchestrator.cli.console import connect, emit
from orchestrator.cli.options import Subcommands, connection
from orchestrator.trends import TrendSettings


def add(sub: Subcommands) -> None:
    rp = sub.add_parser("report", parents=[connection()], help="render a run's report (default: the latest)")
    rp.add_argument("run_id", nargs="?")
    rp.add_argument("--format", choices=sorted(report.RENDERERS), default="md")
    rp.add_argument(
        "--output", type=Path, metavar="PATH", help="write a regular file here (atomically) instead of stdout"
    )
    rp.add_argument("--force", action="store_true", help="with --output: replace a symbolic link at PATH")

    rp.add_argument("--expectations", metavar="FILE", help="separate expected from unexpected outcomes")
    rp.add_argument("--trend-runs", type=int, default=5, metavar="N", help="runs in a metric's median (default 5)")
    rp.add_argument("--trend-violations", type=int, default=2, metavar="K", help="violations in a row (default 2)")
    rp.add_argument(
        "--trend-threshold", type=float, default=0.2, metavar="F", help="relative change that violates (default 0.2)"
    )
    rp.add_argument(
        "--price",
        metavar="DEVICE=PRICE,...",
        help="price per device-hour for the accounting's estimated cost, e.g. cuda=2.5,cpu=0.1",
    )
    rp.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    prices = accounting.parse_prices(args.price)  # bad input: one line, exit 2, before anything is read
    store = connect(settings)
    run_id = store.resolve_run_id(args.run_id)
    trend = TrendSettings(args.trend_runs, args.trend_violations, args.trend_threshold)
    runs_ok = 1 <= trend.window <= MAX_KEEP_RUNS and 1 <= trend.violations <= MAX_KEEP_RUNS
    if not runs_ok or not math.isfinite(trend.threshold) or trend.threshold <= 0:
        raise SelectionError(
            f"--trend-runs and --trend-violations must be at least 1 (at most {MAX_KEEP_RUNS}, the most runs "
            "kept), --trend-threshold positive"
        )
    expected = expecting.load(args.expectations)
    # the model and its rendering (plain acyclic data, the collector paused); a result no renderer
    # can show is shown as a corrupt record (report.render_checked)
    (text,) = report.render_checked(
        store, run_id, [report.RENDERERS[args.format]], expectations=expected, trend=trend, prices=prices
    )
    return emit(text, args.output, force=args.force)
