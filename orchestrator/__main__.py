"""`python -m orchestrator` and the `orchestrator` command (pyproject's entry point).

A Ctrl-C or SIGTERM while the command's modules are still importing (a second or more) exits
130 with one line, as it does later; cli.main installs its own handlers once it runs.
Nothing has been started by then, so there is nothing to stop."""

import os
import signal
import sys
from types import FrameType


def _interrupted(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"orchestrator: interrupted\n")
    os._exit(130)  # fleet.errors.ExitCode.INTERRUPTED, not imported yet on purpose


def run() -> int:
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    from orchestrator.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
