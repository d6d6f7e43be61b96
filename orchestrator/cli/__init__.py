"""The `orchestrator` command: submit runs, follow them, report on them, run the embedded fleet.

One module per command, each holding its options (add) and what it does (run); this module
only registers them and turns errors into one line and an exit code.

Exit codes: 0 ok; 1 internal error; 2 bad input (catalog, family, device, option);
3 Redis unreachable; 4 run or file not found; 5 the run has FAILED or LOST jobs (with
--expectations: the run has unexpected outcomes); 6 Redis is out of memory; 7 the store is
corrupt (a fleet key of another Redis type where nothing else can be shown); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from types import FrameType

from fleet.errors import ExitCode, FleetError
from fleet.settings import Settings
from orchestrator.cli.console import printable
from orchestrator.cli.options import EPILOG, Parser

# One module per command (orchestrator.cli.NAME), in the order `orchestrator --help` lists them.
COMMANDS = (
    "submit",
    "run",
    "status",
    "report",
    "metrics",
    "diff",
    "beat",
    "pin",
    "lock",
    "expect",
    "runs",
    "history",
    "workers",
)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; of only the command argv names when it names one (that is
    all argparse reads then): `orchestrator runs` does not import what `run` or `report` need."""
    p = Parser(
        prog="orchestrator",
        description="model-fleet: which Hugging Face models really run on which hardware, with evidence.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = argv[:1] if argv and argv[0] in COMMANDS else COMMANDS
    for name in names:
        importlib.import_module(f"orchestrator.cli.{name}").add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(argv).parse_args(argv)
    except SystemExit as exc:  # --help (exit 0) or a usage mistake (exit 2): its text may not fit stdout
        return _flushed(exc.code if isinstance(exc.code, int) else ExitCode.BAD_INPUT)
    except OSError as exc:  # the help text could not be written
        return _stdout_failed(exc)
    # Ctrl-C interrupts, even when started with SIGINT ignored (a `cmd &` in a script): Python
    # keeps an inherited SIG_IGN, and then a run could not be stopped with a signal at all.
    install_interrupt_handlers()
    try:
        settings = Settings.from_env().with_redis_url(getattr(args, "redis_url", None))
        return _flushed(int(args.handler(args, settings)))
    except FleetError as exc:
        print(f"orchestrator: error: {printable(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("orchestrator: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError as exc:
        return _stdout_failed(exc)
    except OSError as exc:  # writing stdout failed (`> /dev/full`), or an error we did not foresee
        if exc.filename is None and _stdout_broken():
            return _stdout_failed(exc)
        raise


def _flushed(code: int) -> int:
    """code, once stdout is flushed: a closed pipe or a full disk shows here, not in the interpreter's exit."""
    try:
        sys.stdout.flush()
    except OSError as exc:
        return _stdout_failed(exc)
    return code


def _stdout_broken() -> bool:
    try:
        sys.stdout.flush()
    except OSError:
        return True
    return False


def _stdout_failed(exc: OSError) -> int:
    """The reader went away (`orchestrator runs | head -1`): not an error, exit 0. Any other
    failure to write stdout (`> /dev/full`): one line, exit 2. Either way stdout then goes to
    /dev/null, so that the interpreter's own flush at exit finds nothing to complain about."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(exc, BrokenPipeError):
        return ExitCode.OK
    print(f"orchestrator: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
    return ExitCode.BAD_INPUT


def install_interrupt_handlers() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt once (exit 130); see _interrupt."""
    _interrupt_state["decided"] = False
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


_interrupt_state = {"decided": False}
RETRY_IN_S = 0.05


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The first Ctrl-C or SIGTERM interrupts (KeyboardInterrupt, exit 130). The exit code is then
    decided: later ones (a user pressing Ctrl-C again while the shutdown runs) are dropped, not
    raised wherever the interpreter happens to be. One that arrives inside a finalizer (a
    `__del__` the garbage collector runs) is not raised there: Python would print a traceback and
    drop it, and the run would go on. It is sent again a moment later, to land outside."""
    if _interrupt_state["decided"]:
        return
    if _in_finalizer(frame):
        timer = threading.Timer(RETRY_IN_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    _interrupt_state["decided"] = True
    raise KeyboardInterrupt


def _in_finalizer(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False
