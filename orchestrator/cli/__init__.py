"""The `orchestrator` command: submit runs, follow them, report on them, run the embedded fleet.

One module per command, each holding its options (add) and what it does (run); this module
only registers them and turns errors into one line and an exit code.

Exit codes: 0 ok; 1 internal error; 2 bad input (catalog, family, device, option);
3 Redis unreachable; 4 run or file not found; 5 the run has FAILED or LOST jobs (with
--expectations: the run has unexpected outcomes); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

from fleet.errors import ExitCode, FleetError
from fleet.settings import Settings
from orchestrator.cli import beat, diff, expect, metrics, pin, report, run, runs, status, submit, workers
from orchestrator.cli.options import EPILOG, Parser

# In the order `orchestrator --help` lists them.
COMMANDS = (submit, run, status, report, metrics, diff, beat, pin, expect, runs, workers)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="orchestrator",
        description="model-fleet: which Hugging Face models really run on which hardware, with evidence.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C interrupts, even when started with SIGINT ignored (a `cmd &` in a script): Python
    # keeps an inherited SIG_IGN, and then a run could not be stopped with a signal at all.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        settings = Settings.from_env().with_redis_url(getattr(args, "redis_url", None))
        code = int(args.handler(args, settings))
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
