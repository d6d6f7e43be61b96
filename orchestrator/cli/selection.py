"""The options `submit` and `run` share (what to test, and how) and their one set-up: catalog,
families, devices, run settings, pins, expectations and alert URL, all checked before any job
is enqueued or any process started."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet import lock as locking
from fleet.catalog import MAX_REPEATS, Catalog, load_catalog
from fleet.devices import Device, parse_devices
from fleet.errors import BadInput
from fleet.jobs import MAX_ATTEMPTS, MAX_LOCK
from fleet.settings import RunSettings, Settings
from fleet.timing import MAX_TIME_LIMIT_S
from orchestrator import architectures, notify
from orchestrator import expectations as expecting
from orchestrator import pins as pinning

if TYPE_CHECKING:
    from celery import Celery

    from fleet.store import ResultStore
from orchestrator.cli.options import (
    EXPECT_HELP,
    LOCK_HELP,
    NOTIFY_HELP,
    PINS_HELP,
    VARIANTS_HELP,
    Parser,
    deadline,
    finite,
    reruns,
    variants,
    whole,
)


def parent() -> argparse.ArgumentParser:
    """The parent parser of the selection options."""
    select = Parser(add_help=False)
    which = select.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every family in the catalog")
    which.add_argument("--family", action="append", metavar="NAME", help="one family (repeatable)")
    which.add_argument(
        "--architectures",
        metavar="SPEC",
        help="instead of the catalog: all | TASK[,TASK] | CLASS[,CLASS]: a synthetic job per transformers "
        "class (see orchestrator/architectures.py)",
    )
    which.add_argument(
        "--model",
        action="append",
        metavar="ORG/NAME[@REV]",
        help="instead of the catalog: an ad hoc job on any Hub model, its check chosen from its config (repeatable)",
    )
    select.add_argument("--catalog", metavar="PATH", help="catalog TOML file (default: the one shipped)")
    select.add_argument("--repeats", type=whole(1, MAX_REPEATS), help="timed repeats per check (default: the family's)")
    select.add_argument(
        "--time-limit",
        type=finite,
        metavar="S",
        help=f"per-job time limit, at most {MAX_TIME_LIMIT_S:g} (default: the family's)",
    )
    select.add_argument(
        "--deadline",
        type=deadline,
        default=None,
        metavar="S",
        help="after this many seconds, jobs with no result are LOST (default: visibility timeout + the "
        "longest hard time limit + 60 s, at least 3600; see README 'Deadlines')",
    )
    select.add_argument(
        "--max-attempts",
        type=whole(1, MAX_ATTEMPTS),
        default=3,
        help="deliveries before a job that kills its worker ends FAILED (default 3)",
    )
    select.add_argument(
        "--order",
        choices=["longest-first", "catalog"],
        default="longest-first",
        help="submission order: longest expected job first (from the previous run), or catalog order",
    )
    select.add_argument("--pins", metavar="FILE", help=PINS_HELP)
    select.add_argument("--lock", metavar="FILE", help=LOCK_HELP)
    select.add_argument(
        "--reruns",
        type=reruns,
        default=1,
        metavar="N",
        help="run a FAILED job again up to N times in a fresh process; mixed outcomes are FLAKY (default 1, 0: never)",
    )
    select.add_argument("--variants", type=variants, metavar="LIST", help=VARIANTS_HELP)
    select.add_argument("--expectations", metavar="FILE", help=EXPECT_HELP)
    select.add_argument("--notify", metavar="URL", help=NOTIFY_HELP)
    return select


@dataclass(frozen=True)
class Selection:
    """Everything a run needs that the command line says, checked."""

    catalog: Catalog
    families: list[str] | None  # None: every family of the catalog
    devices: list[Device]
    run_settings: RunSettings
    pins: list[dict[str, Any]]
    lock: list[dict[str, Any]]
    expected: expecting.Expectations | None
    meta: dict[str, Any]  # more run meta (an architecture run records its transformers version)

    def submit(self, store: ResultStore, app: Celery, order: str, origin: str = "cli") -> str:
        """Record the run and publish its jobs (orchestrator.submit); returns the run id."""
        from orchestrator.submit import submit

        return submit(
            store,
            app,
            self.catalog,
            self.families,
            self.devices,
            self.run_settings,
            order=order,
            origin=origin,
            pins=self.pins,
            extra_meta=self.meta,
            lock=self.lock,
        )


def prepare(
    args: argparse.Namespace, settings: Settings, listing: Callable[[], dict[str, Any]], devices: str
) -> Selection:
    """The selection of submit and run; listing gives the transformers classes for --architectures."""
    catalog, meta = _catalog(args, settings, listing)
    families = None if args.all or args.architectures or args.model else args.family
    catalog.select(families)
    chosen = parse_devices(devices)
    run_settings = _run_settings(args)
    pins = pinning.load(args.pins or settings.pins)
    lock = locking.load(args.lock or settings.lock)
    locking.for_job(lock, (), MAX_LOCK)  # a lock too large for a job is an error before anything runs
    expected = expecting.load(args.expectations)
    notify.check_url(args.notify)
    return Selection(catalog, families, chosen, run_settings, pins, lock, expected, meta)


def _run_settings(args: argparse.Namespace) -> RunSettings:
    if args.time_limit is not None and args.time_limit > MAX_TIME_LIMIT_S:
        raise BadInput(f"--time-limit must be at most {MAX_TIME_LIMIT_S:g} s, got {args.time_limit:g}")
    return RunSettings(
        max_attempts=args.max_attempts,
        deadline_s=args.deadline,
        repeats=args.repeats,
        time_limit_s=args.time_limit,
        reruns=args.reruns,
        variants=args.variants,
    )


def _catalog(
    args: argparse.Namespace, settings: Settings, listing: Callable[[], dict[str, Any]]
) -> tuple[Catalog, dict[str, Any]]:
    """The shipped/given catalog, or with --architectures one made from the workers' transformers."""
    if args.model:
        return architectures.adhoc_catalog(args.model), {}
    if not args.architectures:
        return load_catalog(args.catalog, settings.plugins), {}
    found = listing()
    cat = architectures.catalog(found, args.architectures)
    return cat, {"transformers": found.get("transformers"), "architectures": args.architectures}
