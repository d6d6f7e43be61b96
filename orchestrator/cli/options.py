"""The command line's parser class, option types, and the options several commands share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from fleet.errors import ExitCode, FleetError
from fleet.jobs import MAX_RERUNS
from fleet.timing import MAX_DEADLINE_S, finite_positive
from fleet.variants import VariantError
from fleet.variants import parse as parse_variants
from orchestrator.cli.console import printable

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

EPILOG = """exit codes: 0 ok, 1 internal error, 2 bad input, 3 Redis unreachable,
4 run or file not found, 5 the run has FAILED or LOST jobs (submit --wait: also jobs SKIPPED
because no worker served their device; with --expectations: unexpected outcomes, unexpected
passes included), 6 Redis is out of memory (nothing of the run kept), 7 the store is corrupt
(a key of another type: the line names it), 130 interrupted. Output closed early (| head): 0.
Redis: --redis-url, else $FLEET_REDIS_URL, else redis://127.0.0.1:6379/0."""

LOCK_HELP = (
    "model lock (TOML, from `orchestrator lock` or written by hand): the digests that make a result REAL, "
    "on top of the shipped fleet/models.lock (default $FLEET_LOCK)"
)
PINS_HELP = "known-answer pins (TOML, from `orchestrator pin`), on top of the shipped ones (default $FLEET_PINS)"
EXPECT_HELP = "expected outcome per job (TOML, e.g. from `orchestrator expect`): exit 5 only for unexpected outcomes"
NOTIFY_HELP = "POST a JSON summary of unexpected changes here (Slack-compatible); a failed alert never fails the run"

# What add_subparsers() returns; each command adds its parser to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Parser(argparse.ArgumentParser):
    """Usage mistakes in one line (exit 2), like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.BAD_INPUT, f"orchestrator: error: {printable(message)} (see {self.prog} --help)\n")

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        """As argparse's, but a stdout that cannot take the text raises (argparse drops the error)."""
        (file or sys.stdout).write(self.format_help())


def finite(text: str) -> float:
    """argparse type: a finite number > 0 (no nan, no inf)."""
    try:
        return finite_positive(float(text), "the value")
    except (ValueError, FleetError):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def whole(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number from low to high (the limits the workers hold jobs to)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low} and <= {high}, got {text!r}")
        return value

    return parse


def reruns(text: str) -> int:
    """argparse type of --reruns: 0 (never) to MAX_RERUNS, as the workers accept."""
    return whole(0, MAX_RERUNS)(text)


VARIANTS_HELP = (
    "capability variants run after the reference on the same loaded weights: default (the family's own "
    "list, else bf16,fp16,sdpa,eager,batched,static_cache), all, none, or a list of bf16, fp16, sdpa, eager, "
    "flex, flash, sdpa:flash|efficient|cudnn|math, attention:NAME, batched, static_cache, compile, export "
    "(parts combine with +; flex, compile and export compile code per model: on cpu about 0.3 s, 51 s and "
    "4 s a model with warm caches, far more cold; see docs/variants.md)"
)


def variants(text: str) -> str:
    """argparse type of --variants: checked here (fleet.variants), expanded per family at submit."""
    try:
        parse_variants(text)
    except VariantError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("--variants: ")) from None
    return text


def deadline(text: str) -> float:
    """argparse type: a run deadline, a finite number of seconds > 0 and at most MAX_DEADLINE_S."""
    value = finite(text)
    if value > MAX_DEADLINE_S:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DEADLINE_S:.0f} s (30 days), got {text!r}")
    return value


def connection() -> argparse.ArgumentParser:
    """The parent parser of every command that talks to a Redis it is given."""
    conn = Parser(add_help=False)
    conn.add_argument("--redis-url", help="Redis URL (redis:// or rediss://); default $FLEET_REDIS_URL")
    return conn
