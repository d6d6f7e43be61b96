"""What the markdown and HTML renderers share: the Jinja2 environment over templates/
(orchestrator.templates), the status globals, and number formatting."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from fleet.protocol import FAILING, PASSED, RANK, STATUSES


def number(value: Any, digits: int = 2, empty: str = "-") -> str:
    if value is None or value == "":
        return empty
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def quality_verdict(q: Any) -> str:
    """What a quality record (workers/quality.py) says, in words: passed, failed, information
    only, or "no gate: <reason>" when no bound was checked. Any record renders, with or without
    a bound."""
    if not isinstance(q, dict):
        return "no quality record"
    passed, reason = q.get("passed"), q.get("reason")
    if passed is None and reason:
        return f"no gate: {reason}" + (" (synthetic weights)" if q.get("informational") else "")
    if q.get("informational"):
        return "information only (synthetic weights)"
    if passed is None:
        return "no gate: no bound was checked"
    if passed is True:
        return "passed"
    return f"failed: {reason}" if reason else "failed"


def template_dir() -> str:
    """templates/ of the checkout this module was imported from (a source tree or a git worktree),
    else the installed package data (orchestrator.templates)."""
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return str(checkout)
    return str(resources.files("orchestrator.templates"))


# From this many results a report summarises: the jobs that need a look are listed (not passing,
# regressed or improved, unexpected, flaky), the others counted; every job is in the JSON report.
COMPACT_FROM = 500


def notable(row: dict[str, Any]) -> bool:
    """Whether a summarised report lists this job."""
    return (
        row["status"] not in PASSED
        or row.get("change") in ("regressed", "improved")
        or bool(row.get("unexpected") or row.get("flaky"))
    )


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(jinja2.Environment):
    """`row.status` on a plain dict looked up as a key at once: Jinja2 tries the attribute first,
    and the AttributeError it catches costs more than the lookup (a report's templates read
    hundreds of thousands of fields). Same outcome: a dict's own attributes (`row.get`) still
    win, a missing key is undefined."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def environment(autoescape: bool, filters: dict[str, Callable[..., Any]], **globals_: Any) -> jinja2.Environment:
    """A strict environment (undefined names fail) with the status ranking every report shows."""
    env = _Environment(
        loader=jinja2.FileSystemLoader(template_dir()),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(filters)
    env.globals.update(
        RANK=RANK, STATUSES=STATUSES, FAILING=[str(s) for s in FAILING], quality_verdict=quality_verdict, **globals_
    )
    return env
