"""The `orchestrator` command: submit runs, follow them, report on them, run the embedded fleet.

Exit codes: 0 ok; 1 internal error; 2 bad input (catalog, family, device, option);
3 Redis unreachable; 4 run or file not found; 5 the run has FAILED or LOST jobs (with
--expectations: the run has unexpected outcomes); 6 Redis is out of memory; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from fleet.catalog import Catalog, load_catalog
from fleet.devices import parse_devices
from fleet.errors import BadInput, ErrorKind, ExitCode, FleetError, RunFailed, SelectionError
from fleet.protocol import FAILING, Status
from fleet.settings import RunSettings, Settings, redact_url
from fleet.store import ResultStore
from fleet.timing import MAX_TIME_LIMIT_S, finite_positive
from orchestrator import architectures, metrics, notify, report, runs
from orchestrator import expectations as expecting
from orchestrator import pins as pinning
from orchestrator.trends import TrendSettings

EPILOG = """exit codes: 0 ok, 1 internal error, 2 bad input, 3 Redis unreachable,
4 run or file not found, 5 the run has FAILED or LOST jobs (submit --wait: also jobs SKIPPED
because no worker served their device; with --expectations: unexpected outcomes, unexpected
passes included), 6 Redis is out of memory (nothing of the run kept), 130 interrupted. Output closed early (| head): 0.
Redis: --redis-url, else $FLEET_REDIS_URL, else redis://127.0.0.1:6379/0."""


PINS_HELP = "known-answer pins (TOML, from `orchestrator pin`), on top of the shipped ones (default $FLEET_PINS)"
EXPECT_HELP = "expected outcome per job (TOML, e.g. from `orchestrator expect`): exit 5 only for unexpected outcomes"
NOTIFY_HELP = "POST a JSON summary of unexpected changes here (Slack-compatible); a failed alert never fails the run"


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (exit 2), like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.BAD_INPUT, f"orchestrator: error: {message} (see {self.prog} --help)\n")


def _finite(text: str) -> float:
    """argparse type: a finite number > 0 (no nan, no inf)."""
    try:
        return finite_positive(float(text), "the value")
    except (ValueError, FleetError):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="orchestrator",
        description="model-fleet: which Hugging Face models really run on which hardware, with evidence.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    conn = _Parser(add_help=False)
    conn.add_argument("--redis-url", help="Redis URL (redis:// or rediss://); default $FLEET_REDIS_URL")

    select = _Parser(add_help=False)
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
    select.add_argument("--repeats", type=_positive_int, help="timed repeats per check (default: the family's)")
    select.add_argument(
        "--time-limit",
        type=_finite,
        metavar="S",
        help=f"per-job time limit, at most {MAX_TIME_LIMIT_S:g} (default: the family's)",
    )
    select.add_argument(
        "--deadline",
        type=_finite,
        default=None,
        metavar="S",
        help="after this many seconds, jobs with no result are LOST (default: visibility timeout + the "
        "longest hard time limit + 60 s, at least 3600; see README 'Deadlines')",
    )
    select.add_argument(
        "--max-attempts",
        type=_positive_int,
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
    select.add_argument(
        "--reruns",
        type=int,
        default=1,
        metavar="N",
        help="run a FAILED job again up to N times in a fresh process; mixed outcomes are FLAKY (default 1, 0: never)",
    )
    select.add_argument("--expectations", metavar="FILE", help=EXPECT_HELP)
    select.add_argument("--notify", metavar="URL", help=NOTIFY_HELP)

    s = sub.add_parser(
        "submit",
        parents=[conn, select],
        help="enqueue (family, device) jobs; print the run id",
        description="Expand the selection into (family, device) jobs under a new run id and enqueue them.",
    )
    s.add_argument("--devices", default="cpu", help="comma-separated: cpu, cuda, cuda:N (default: cpu)")
    s.add_argument(
        "--wait", action="store_true", help="follow the run with a progress bar; exit 5 if any job FAILED or was LOST"
    )

    r = sub.add_parser(
        "run",
        parents=[select],
        help="embedded fleet: private Redis + local workers, then a report",
        description="Start a private Redis and this machine's workers, run the selection, write "
        "the report (markdown and JSON), stop everything.",
    )
    r.add_argument("--devices", help="default: cpu, plus cuda when a GPU is visible")
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

    st = sub.add_parser("status", parents=[conn], help="progress and counts of a run (default: the latest)")
    st.add_argument("run_id", nargs="?")
    st.add_argument("--json", action="store_true")

    rp = sub.add_parser("report", parents=[conn], help="render a run's report (default: the latest)")
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

    mt = sub.add_parser(
        "metrics",
        parents=[conn],
        help="Prometheus metrics of a run (default: the latest): jobs by status, duration, queue lengths",
    )
    mt.add_argument("run_id", nargs="?")
    mt.add_argument("--output", type=Path, metavar="PATH", help="write here (atomically), e.g. a .prom textfile")

    d = sub.add_parser("diff", parents=[conn], help="status and metric changes between two runs")
    d.add_argument(
        "runs", nargs="*", metavar="RUN", help="RUN_A RUN_B (default: the one before the latest, the latest)"
    )
    d.add_argument("--threshold", type=_finite, default=0.2, help="relative metric change to list (default 0.2)")
    d.add_argument("--json", action="store_true")

    b = sub.add_parser(
        "beat",
        parents=[conn],
        help="run the schedule: celery beat plus the control worker that submits and reports",
        description="Run celery beat and the control worker (queue 'control') in this process. Each schedule "
        "slot gives at most one run, however many beat processes run; the report is kept in Redis and in "
        "REPORTS_DIR (md, json, html), with latest.md and latest.html pointing at the newest and fleet.prom "
        "holding its metrics.",
    )
    b.add_argument(
        "--schedule", default=None, help="'cron:M H DOM MON DOW' in UTC (default 'cron:0 6 * * *') or 'every:SECONDS'"
    )
    b.add_argument("--devices", default="cpu", help="devices of the scheduled runs (default: cpu)")
    b.add_argument("--catalog", metavar="PATH", help="catalog TOML file (default: the one shipped)")
    b.add_argument("--reports-dir", type=Path, help="default $FLEET_REPORTS_DIR or STATE_DIR/reports")
    b.add_argument("--deadline", type=_finite, default=3600.0, metavar="S", help="run deadline (default 3600)")
    b.add_argument("--state-dir", type=Path, help="where the beat schedule file lives")
    b.add_argument("--pins", metavar="FILE", help=PINS_HELP)
    b.add_argument("--reruns", type=int, default=1, metavar="N", help="reruns of a FAILED job (default 1)")
    b.add_argument("--expectations", metavar="FILE", help="expected outcomes, for the reports and alerts")
    b.add_argument("--notify", metavar="URL", help=NOTIFY_HELP)

    pn = sub.add_parser(
        "pin",
        parents=[conn],
        help="write known-answer pins from a run's REAL results (default: the latest run)",
        description="Record, for each REAL result, its output fingerprint keyed by model, revision, weights "
        "sha256 and device type, with the check's tolerances. Later runs given --pins FILE compare with it: "
        "a mismatch is FAILED known_answer_mismatch.",
    )
    pn.add_argument("run_id", nargs="?")
    pn.add_argument("--output", type=Path, metavar="PATH", required=True, help="pins TOML file to write (atomically)")

    ex = sub.add_parser(
        "expect",
        parents=[conn],
        help="write an expectations file from a run's outcomes (default: the latest run)",
        description="Write expectations.toml: each job's status in the run, with a reason to edit. Later "
        "runs given --expectations FILE exit 5 only for outcomes that differ (unexpected passes included).",
    )
    ex.add_argument("run_id", nargs="?")
    ex.add_argument("--output", type=Path, metavar="PATH", required=True, help="TOML file to write (atomically)")

    sub.add_parser("runs", parents=[conn], help="list the stored runs, newest first")
    sub.add_parser("workers", parents=[conn], help="list the live workers and what they serve")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C interrupts, even when started with SIGINT ignored (a `cmd &` in a script): Python
    # keeps an inherited SIG_IGN, and then a run could not be stopped with a signal at all.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        settings = Settings.from_env().with_redis_url(getattr(args, "redis_url", None))
        code = int(COMMANDS[args.command](args, settings))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except FleetError as exc:
        print(f"orchestrator: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrator: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`orchestrator runs | head -1`): not an error; silence the
        # interpreter's own flush of the closed stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _store(settings: Settings) -> ResultStore:
    store = ResultStore.from_settings(settings)
    store.ping()
    return store


def _run_settings(args: argparse.Namespace) -> RunSettings:
    if args.time_limit is not None and args.time_limit > MAX_TIME_LIMIT_S:
        raise BadInput(f"--time-limit must be at most {MAX_TIME_LIMIT_S:g} s, got {args.time_limit:g}")
    if args.reruns < 0:
        raise SelectionError(f"--reruns must be 0 or more, got {args.reruns}")
    return RunSettings(
        max_attempts=args.max_attempts,
        deadline_s=args.deadline,
        repeats=args.repeats,
        time_limit_s=args.time_limit,
        reruns=args.reruns,
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


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from fleet.broker import make_app
    from orchestrator.submit import ProgressBar, submit, unserved_devices

    catalog, arch_meta = _catalog(args, settings, lambda: architectures.published_listing(_store(settings).r))
    families = None if args.all or args.architectures or args.model else args.family
    catalog.select(families)
    devices = parse_devices(args.devices)
    run_settings = _run_settings(args)
    store = _store(settings)
    for device in unserved_devices(store, devices):
        print(
            f"orchestrator: warning: no live worker serves {device}; its jobs will end SKIPPED at the deadline "
            "unless one starts",
            file=sys.stderr,
        )
    pins = pinning.load(args.pins or settings.pins)
    expected = expecting.load(args.expectations)
    notify.check_url(args.notify)
    app = make_app(settings=settings)
    run_id = submit(
        store, app, catalog, families, devices, run_settings, order=args.order, pins=pins, extra_meta=arch_meta
    )
    print(run_id, flush=True)
    if not args.wait:
        return ExitCode.OK
    counts = runs.wait(store, run_id, ProgressBar())
    verdict = _finish(store, run_id, counts, expected, args.notify)
    # Devices nobody served: the run did not test what was asked, so --wait does not exit 0.
    unserved = sorted(
        {
            r["device"]
            for r in store.results(run_id)
            if r["status"] == Status.SKIPPED and r["error"] is not None and r["error"]["kind"] == ErrorKind.NO_WORKER
        }
    )
    if unserved:
        print(f"orchestrator: run {run_id}: no worker served {', '.join(unserved)}", file=sys.stderr)
        return RunFailed.exit_code
    return verdict


def _finish(
    store: ResultStore,
    run_id: str,
    counts: Counter[str],
    expected: expecting.Expectations | None,
    notify_url: str | None,
) -> int:
    """Alert (when asked, never failing the run), then the exit code."""
    if notify_url:
        notify.send(notify_url, report.build(store, run_id, expectations=expected))
    if expected is not None:
        return _verdict_expected(run_id, store, expected)
    return _verdict(run_id, counts)


def _verdict(run_id: str, counts: Counter[str]) -> int:
    bad = sum(counts.get(s, 0) for s in FAILING)
    flaky = counts.get("FLAKY", 0)
    if flaky:
        print(f"orchestrator: run {run_id}: {flaky} job(s) FLAKY (passed on a rerun)", file=sys.stderr)
    if bad:
        print(f"orchestrator: run {run_id}: {bad} job(s) FAILED or LOST", file=sys.stderr)
        return RunFailed.exit_code
    return ExitCode.OK


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


def _verdict_expected(run_id: str, store: ResultStore, expected: expecting.Expectations) -> int:
    """Exit 5 only for outcomes that differ from the expectations (unexpected passes included)."""
    bad = [(r, expected.judge(r)) for r in store.results(run_id)]
    bad = [(r, v) for r, v in bad if v["unexpected"]]
    for r, v in bad:
        want = v["expected"] or "a pass"
        print(f"orchestrator: {run_id}: {r['job_id']}: {v['kind']}: {r['status']}, expected {want}", file=sys.stderr)
    if bad:
        return RunFailed.exit_code
    return ExitCode.OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from fleet.broker import make_app
    from fleet.launcher import visible_gpus
    from orchestrator.embedded import EmbeddedFleet
    from orchestrator.submit import ProgressBar, submit

    catalog, arch_meta = _catalog(args, settings, architectures.local_listing)
    families = None if args.all or args.architectures or args.model else args.family
    catalog.select(families)
    gpus = visible_gpus()
    devices = parse_devices(args.devices or ("cpu,cuda" if gpus else "cpu"))
    run_settings = _run_settings(args)
    pins = pinning.load(args.pins or settings.pins)
    expected = expecting.load(args.expectations)
    notify.check_url(args.notify)
    state = _state_dir(args.state_dir or settings.home)
    worker_devices = ",".join(["cpu"] + (["cuda"] if gpus and any(d.is_gpu for d in devices) else []))
    flags = ["--trust-remote-code"] * args.trust_remote_code + ["--allow-pickle"] * args.allow_pickle
    for raw in args.allow_path:
        if not Path(raw).expanduser().is_dir():
            raise BadInput(f"--allow-path {raw}: no such directory")
        flags += ["--allow-path", str(Path(raw).expanduser().resolve())]
    print(f"orchestrator: starting Redis and workers ({worker_devices}) in {state}", file=sys.stderr)
    with EmbeddedFleet(state, worker_devices, worker_flags=flags) as fleet:
        fleet_settings = settings.with_redis_url(fleet.url)
        store = ResultStore.from_settings(fleet_settings)
        app = make_app(settings=fleet_settings)
        run_id = submit(
            store,
            app,
            catalog,
            families,
            devices,
            run_settings,
            order=args.order,
            origin="embedded",
            pins=pins,
            extra_meta=arch_meta,
        )
        print(f"orchestrator: run {run_id}: {len(catalog.select(families)) * len(devices)} job(s)", file=sys.stderr)
        # This fleet is complete: jobs for a device it has no worker for end SKIPPED now.
        if runs.skip_unserved(store, run_id, store.served_queues()):
            print("orchestrator: warning: no GPU visible here; cuda jobs end SKIPPED", file=sys.stderr)
        counts = runs.wait(store, run_id, ProgressBar())
        paths = report.save_run_report(store, run_id, args.output_dir or state / "reports", expectations=expected)
        code = _finish(store, run_id, counts, expected, args.notify)
    for path in paths:
        print(path)
    return code


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    run_id = store.resolve_run_id(args.run_id)
    current = runs.view(store, run_id)  # reading never writes
    meta, finished, counts = current.meta, current.finished, current.counts
    done, total = len(current.results), current.total
    if args.json:
        print(
            json.dumps(
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
        print(f"run {run_id}: {state}, {done}/{total} done ({summary})")
    return ExitCode.OK


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    run_id = store.resolve_run_id(args.run_id)
    trend = TrendSettings(args.trend_runs, args.trend_violations, args.trend_threshold)
    if trend.window < 1 or trend.violations < 1 or trend.threshold <= 0:
        raise SelectionError("--trend-runs and --trend-violations must be at least 1, --trend-threshold positive")
    expected = expecting.load(args.expectations)
    text = report.RENDERERS[args.format](report.build(store, run_id, expectations=expected, trend=trend))
    return _emit(text, args.output, force=args.force)


def _emit(text: str, output: Path | None, force: bool = False) -> int:
    """To stdout, or to a regular file written atomically (its path printed)."""
    if output is None:
        sys.stdout.write(text)
    else:
        report.write_atomic(output, text, force=force)
        print(output)
    return ExitCode.OK


def cmd_metrics(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    return _emit(metrics.exposition(store, store.resolve_run_id(args.run_id)), args.output)


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if len(args.runs) == 2:
        a, b = (store.resolve_run_id(x) for x in args.runs)
    elif not args.runs:
        ids = store.run_ids(2)
        if len(ids) < 2:
            raise SelectionError("diff needs two runs; only one is stored")
        b, a = ids
    else:
        raise SelectionError("diff takes two run ids, or none for the latest against the one before")
    data = report.diff(store, a, b, args.threshold)
    if args.json:
        print(json.dumps(data, indent=2))
        return ExitCode.OK
    print(f"{a} -> {b}")
    for c in data["status_changes"]:
        print(f"  {c['job_id']}: {c['from']} -> {c['to']} ({c['change']})")
    for c in data["metric_changes"]:
        print(f"  {c['job_id']}: {c['metric']} {c['from']} -> {c['to']} ({c['relative']:+.0%})")
    for c in data["metrics_not_compared"]:
        print(f"  {c['job_id']}: metrics not compared ({c['reason']})")
    if not data["status_changes"] and not data["metric_changes"]:
        print("  no changes")
    return ExitCode.OK


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    for run_id in store.run_ids(50):
        done, total, counts = store.progress(run_id)
        print(f"{run_id}  {done}/{total}  " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return ExitCode.OK


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    workers = store.live_workers()
    if not workers:
        print(f"no live workers on {redact_url(store.url)}")
    for w in workers:
        gpus = f"  gpus: {'; '.join(w['gpus'])}" if w.get("gpus") else ""
        print(
            f"{w['name']}  queues={','.join(w['queues'])}  torch={w.get('torch')}  "
            f"transformers={w.get('transformers')}  parent_cuda_initialized={w.get('parent_cuda_initialized')}{gpus}"
        )
    return ExitCode.OK


def cmd_beat(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.schedule import CONTROL_QUEUE, DEFAULT_SCHEDULE, ScheduleOptions, make_beat_app

    state = args.state_dir or settings.home
    pins_path = args.pins or settings.pins
    if args.reruns < 0:
        raise SelectionError(f"--reruns must be 0 or more, got {args.reruns}")
    expecting.load(args.expectations)  # a bad file is an error now, not at the first scheduled run
    options = ScheduleOptions(
        spec=args.schedule or DEFAULT_SCHEDULE,
        reruns=args.reruns,
        expectations=str(Path(args.expectations).resolve()) if args.expectations else None,
        notify=notify.check_url(args.notify),
        devices=tuple(parse_devices(args.devices)),
        reports_dir=args.reports_dir or state / "reports",
        catalog=str(Path(args.catalog).resolve()) if args.catalog else None,
        deadline_s=args.deadline,
        pins=str(Path(pins_path).resolve()) if pins_path else None,
    )
    load_catalog(options.catalog, settings.plugins)
    pinning.load(options.pins)  # a bad pins file is an error now, not at the first scheduled run
    app = make_beat_app(settings, options)  # checks the schedule
    _store(settings)
    state.mkdir(parents=True, exist_ok=True)
    name = f"control-{os.getpid()}@{socket.gethostname()}"
    print(f"orchestrator: beat on schedule {options.spec!r} (UTC), devices {args.devices}", file=sys.stderr)
    app.worker_main(
        [
            "worker",
            "-B",
            "-Q",
            CONTROL_QUEUE,
            "-c",
            "2",
            "-n",
            name,
            "--schedule-filename",
            str(state / f"beat-{os.getpid()}.db"),
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ]
    )
    return ExitCode.OK


def cmd_pin(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    run_id = store.resolve_run_id(args.run_id)
    built = pinning.from_results(store.results(run_id), f"run {run_id}")
    if not built:
        raise SelectionError(f"run {run_id} has no REAL result with an output fingerprint: nothing to pin")
    header = f"Known-answer pins written by `orchestrator pin {run_id}`. Use with --pins FILE."
    report.write_atomic(args.output, pinning.dumps(built, header))
    print(f"{args.output}: {len(built)} pin(s) from run {run_id}")
    return ExitCode.OK


def cmd_expect(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    run_id = store.resolve_run_id(args.run_id)
    results = runs.view(store, run_id).results
    if not results:
        raise SelectionError(f"run {run_id} has no results yet: nothing to expect")
    report.write_atomic(args.output, expecting.dumps(results, run_id))
    print(f"{args.output}: {len(results)} expectation(s) from run {run_id}")
    return ExitCode.OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "beat": cmd_beat,
    "submit": cmd_submit,
    "run": cmd_run,
    "status": cmd_status,
    "report": cmd_report,
    "metrics": cmd_metrics,
    "diff": cmd_diff,
    "runs": cmd_runs,
    "workers": cmd_workers,
    "pin": cmd_pin,
    "expect": cmd_expect,
}

if __name__ == "__main__":
    sys.exit(main())
