"""Reports computed from the store: the model (model.py) and its renderers (markdown, JSON, JUnit),
plus status and metric changes between runs (diff.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.collector import collector_paused
from fleet.errors import FleetError, StoreCorrupt
from fleet.store import ResultStore
from orchestrator.expectations import Expectations
from orchestrator.output import write_atomic, write_atomic_set
from orchestrator.report.diff import diff
from orchestrator.report.html import render_html
from orchestrator.report.json import to_json
from orchestrator.report.junit import to_junit
from orchestrator.report.markdown import code, md, render_markdown
from orchestrator.report.model import agreement, assemble, build, compare_outputs

RENDERERS = {"md": render_markdown, "json": to_json, "junit": to_junit, "html": render_html}
MAX_UNREADABLE = 32  # results set aside as corrupt before the report gives up with one line
logger = logging.getLogger("fleet.report")


def render_checked(
    store: ResultStore, run_id: str, renderers: list[Callable[[dict[str, Any]], str]], **build_kw: Any
) -> list[str]:
    """The run's report in each renderer's format. Whoever can write to Redis can put a value of
    any type anywhere inside a result that is sound at its top level (fleet.records checks the
    fields every reader needs), and a renderer that reads deeper (a metric, the weights' claims,
    a conversion) raised a traceback on it. So a report that cannot be rendered is rendered again
    with results set aside (a binary search over them, one culprit at a time) until the results
    that break it are found: each is then shown as a corrupt record (FAILED, error kind corrupt_record, naming the
    error), never hidden and never shown as what it claims. When no result of the run is the
    cause (its meta, an earlier run's record), it is one line (exit 7), never a traceback."""

    def render(unreadable: dict[str, str]) -> list[str]:
        with collector_paused():
            model = build(store, run_id, unreadable=unreadable, **build_kw)
            return [renderer(model) for renderer in renderers]

    try:
        return render({})
    except (FleetError, KeyboardInterrupt, MemoryError, RecursionError):
        raise
    except Exception as exc:
        first = exc
    job_ids = sorted({str(r["job_id"]) for r in store.results(run_id)})
    unreadable: dict[str, str] = {}
    reason = f"the report could not show it ({type(first).__name__}: {str(first)[:200]})"
    if not _fails(render, dict.fromkeys(job_ids, reason)):
        while len(unreadable) < MAX_UNREADABLE:
            # The shortest prefix of the suspects whose setting aside lets the report render ends
            # with a result that breaks it (the prefix one shorter still fails): binary search.
            suspects = [j for j in job_ids if j not in unreadable]
            low, high = 0, len(suspects)  # aside suspects[:low] fails, suspects[:high] renders
            while high - low > 1:
                mid = (low + high) // 2
                if _fails(render, {**unreadable, **dict.fromkeys(suspects[:mid], reason)}):
                    low = mid
                else:
                    high = mid
            unreadable[suspects[high - 1]] = reason
            logger.warning("result %s of run %s cannot be rendered: shown as corrupt", suspects[high - 1], run_id)
            if not _fails(render, unreadable):
                return render(unreadable)
    raise StoreCorrupt(
        f"the report of run {run_id} cannot be rendered from what Redis holds ({type(first).__name__}: "
        f"{str(first)[:200]}): a stored record of the run or an earlier one holds a value of the wrong type"
    )


def _fails(render: Callable[[dict[str, str]], list[str]], unreadable: dict[str, str]) -> bool:
    try:
        render(unreadable)
    except (FleetError, KeyboardInterrupt, MemoryError, RecursionError):
        raise
    except Exception:
        return True
    return False


def save_run_report(
    store: ResultStore, run_id: str, out_dir: Path, expectations: Expectations | None = None
) -> tuple[Path, Path, Path]:
    """Render a run once: markdown kept in Redis, and RUN_ID.md, RUN_ID.json and RUN_ID.html in out_dir."""
    markdown, as_json, html = render_checked(
        store, run_id, [render_markdown, to_json, render_html], expectations=expectations
    )
    store.registry.save_report(run_id, markdown)
    md_path, json_path, html_path = (out_dir / f"{run_id}.{ext}" for ext in ("md", "json", "html"))
    write_atomic_set([(md_path, markdown), (json_path, as_json), (html_path, html)])  # all three or none
    return md_path, json_path, html_path


__all__ = [
    "RENDERERS",
    "agreement",
    "assemble",
    "build",
    "code",
    "collector_paused",
    "compare_outputs",
    "diff",
    "md",
    "render_checked",
    "render_html",
    "render_markdown",
    "save_run_report",
    "to_json",
    "to_junit",
    "write_atomic",
    "write_atomic_set",
]
