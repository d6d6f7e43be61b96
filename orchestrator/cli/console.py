"""What the commands share at run time: the run store they read, where their text goes, and
how a verdict is said (one line per reason on stderr, then its exit code)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.errors import ExitCode
from fleet.settings import Settings
from fleet.store import ResultStore
from orchestrator.output import write_atomic

if TYPE_CHECKING:
    from orchestrator.verdicts import Verdict


def connect(settings: Settings) -> ResultStore:
    """The run store, pinged: an unreachable Redis is an error (exit 3) before anything else."""
    store = ResultStore.from_settings(settings)
    store.ping()
    return store


def warn(message: str) -> None:
    print(f"orchestrator: warning: {printable(message)}", file=sys.stderr)


def note(message: str) -> None:
    print(f"orchestrator: {printable(message)}", file=sys.stderr)


def line(text: str) -> None:
    """One line of a command's text output on stdout, unprintable characters escaped."""
    print(printable(text))


def say(verdict: Verdict) -> int:
    """The verdict's notes on stderr; its exit code."""
    for line in verdict.notes:
        note(line)
    return verdict.exit_code


def emit(text: str, output: Path | None, force: bool = False) -> int:
    """To stdout, or to a regular file written atomically (its path printed)."""
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomic(output, text, force=force)
        print(output)
    return ExitCode.OK


def printable(text: str) -> str:
    """text with control and other unprintable characters escaped (ESC as \\x1b, a newline as
    \\n): names from catalogs, URLs and Redis cannot move the cursor or recolour a terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
