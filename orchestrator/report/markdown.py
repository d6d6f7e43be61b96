"""The markdown report, rendered with the Jinja2 templates in templates/ (orchestrator.templates).
From COMPACT_FROM results it lists only the jobs that need a look (templating.notable) in its
status table, charts, history and details, and counts the others; the JSON report has them all.

Every value that reaches a table goes through md() or code(): HTML is made inert and markdown
syntax escaped, so a hostile model name or error message cannot change the report's structure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2

from fleet.protocol import RANK
from orchestrator.report.templating import COMPACT_FROM, environment, notable, number

# One pass in C: HTML made inert, markdown syntax escaped, line breaks flattened.
_MD_TABLE = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": " ", "\n": " "} | {c: "\\" + c for c in "\\`*_[]|~"}
)


def md(value: Any) -> str:
    """Escape a value for a markdown table cell: no HTML, no table breaks, no formatting."""
    if value is None:
        return ""
    return str(value).translate(_MD_TABLE)


def code(value: Any) -> str:
    """For inside a `code span`, where backslash escapes would show: keep identifier characters only."""
    if value is None or value == "":
        return "—"
    return re.sub(r"[^A-Za-z0-9_.:=,@/+-]", "?", str(value))


def mermaid_label(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9@_.:-]", "_", str(value))[:60]


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


History = list[tuple[str, dict[str, str]]]  # the model's "history": (run id, statuses by job id), oldest first


def strip_ranks(job_id: str, history: History) -> str:
    """A job's status rank in each run of the history strip (0: not in that run), comma separated.
    In Python, not in the template: a report lists thousands of jobs times ten runs."""
    return ", ".join(str(RANK.get(statuses.get(job_id, ""), 0)) for _, statuses in history)


def strip_cells(job_id: str, history: History) -> str:
    """A job's status in each run of the history strip (— where it was not), as table cells."""
    return "".join(f"{statuses.get(job_id, '—')} | " for _, statuses in history)


def known_answer(row: dict[str, Any]) -> str:
    """A job's known answer in a word or two (status table and details): a mismatch, none for a
    job that did not run its model, pinned and matched, or unpinned. In Python, not a macro:
    every listed job calls it (twice)."""
    error = row["error"]
    if error and error["kind"] == "known_answer_mismatch":
        return "**mismatch**"
    if row["status"] not in ("REAL", "UNVERIFIED"):
        return "—"
    ka = (row.get("output") or {}).get("known_answer")
    if isinstance(ka, Mapping) and ka.get("pinned") and ka.get("matched"):
        return "pinned, matched"
    return "unpinned"


@cache
def _env() -> jinja2.Environment:
    filters: dict[str, Callable[..., Any]] = {"md": md, "code": code, "mermaid": mermaid_label, "when": when}
    filters |= {"num": number, "strip_ranks": strip_ranks, "strip_cells": strip_cells, "known_answer": known_answer}
    return environment(False, filters)


def render_markdown(report: dict[str, Any]) -> str:
    # an architecture run: summary first (coverage, failures by kind); per-job detail in the JSON
    template = "architectures.md.j2" if report.get("architectures") else "report.md.j2"
    rows = report["rows"]
    listed = rows if len(rows) < COMPACT_FROM else [r for r in rows if notable(r)]
    return _env().get_template(template).render(r=report, rows=listed, left_out=len(rows) - len(listed))
