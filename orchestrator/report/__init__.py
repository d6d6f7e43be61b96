"""Reports computed from the store: the model (model.py) and its renderers (markdown, JSON, JUnit),
plus status and metric changes between runs (diff.py)."""

from __future__ import annotations

from pathlib import Path

from fleet.collector import collector_paused
from fleet.store import ResultStore
from orchestrator.expectations import Expectations
from orchestrator.output import write_atomic
from orchestrator.report.diff import diff
from orchestrator.report.html import render_html
from orchestrator.report.json import to_json
from orchestrator.report.junit import to_junit
from orchestrator.report.markdown import code, md, render_markdown
from orchestrator.report.model import agreement, assemble, build, compare_outputs

RENDERERS = {"md": render_markdown, "json": to_json, "junit": to_junit, "html": render_html}


def save_run_report(
    store: ResultStore, run_id: str, out_dir: Path, expectations: Expectations | None = None
) -> tuple[Path, Path, Path]:
    """Render a run once: markdown kept in Redis, and RUN_ID.md, RUN_ID.json and RUN_ID.html in out_dir."""
    data = build(store, run_id, expectations=expectations)
    markdown = render_markdown(data)
    store.registry.save_report(run_id, markdown)
    md_path, json_path, html_path = (out_dir / f"{run_id}.{ext}" for ext in ("md", "json", "html"))
    write_atomic(md_path, markdown)
    write_atomic(json_path, to_json(data))
    write_atomic(html_path, render_html(data))
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
    "render_html",
    "render_markdown",
    "save_run_report",
    "to_json",
    "to_junit",
    "write_atomic",
]
