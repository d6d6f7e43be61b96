"""`python -m orchestrator` and the `orchestrator` command (pyproject's entry point).

A Ctrl-C or SIGTERM while the command's modules are still importing (a second or more) exits
130 with one line, as it does later; cli.main installs its own handlers once it runs.
Nothing has been started by then, so there is nothing to stop. (Before this module runs, the
interpreter's own start-up, ~0.1 s, is Python's: a Ctrl-C there shows Python's traceback.)"""

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

    try:
        return main()
    except KeyboardInterrupt:  # a Ctrl-C just as main returned
        print("orchestrator: interrupted", file=sys.stderr)
        return 130
    finally:
        # The exit code is decided: a later Ctrl-C (a user pressing it again while a shutdown
        # ends) is dropped, not delivered during the interpreter's exit (which restores the
        # default action and would die of it, exit -2).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    sys.exit(run())
