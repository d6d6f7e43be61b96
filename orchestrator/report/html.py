"""The HTML report: one self-contained file (inline CSS and SVG, no script, no fetch) with the
status matrix, a history strip per job, latency and memory charts, failure groups and per-job
details behind <details>. From COMPACT_FROM results the page summarises instead, so that it stays
a few MB and a browser opens it in seconds: the matrix by architecture and device (counts), every
miss (not passing, regressed, unexpected or flaky) listed in its failure group, history strips
only for the jobs whose status changed (at most HISTORY_ROWS), and each job's evidence in the
JSON report beside it (RUN_ID.json) rather than on the page. Rendered with
templates/report.html.j2, autoescape on: every value from a result is text, never markup. The
page carries a Content-Security-Policy that forbids scripts and every network fetch, so even a
rendering bug cannot make it run code or call out.

The view model is computed here, in Python; the template only lays it out. Fields that other
parts of the report model may add (a row's `unexpected`, `expected`, `flaky`, `baseline`) are
read with .get() and shown when present.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import cache, partial
from typing import Any

import jinja2
from markupsafe import Markup, escape

from fleet.protocol import FAILING, PASSED, STATUSES
from orchestrator.report.markdown import when
from orchestrator.report.templating import COMPACT_FROM, environment, number

LETTER = {"REAL": "R", "UNVERIFIED": "U", "SYNTHETIC": "S", "FLAKY": "Y", "FAILED": "F", "SKIPPED": "K", "LOST": "L"}
# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); the letter
# in each cell carries the status without colour.
COLOUR = {
    "REAL": "#009e73",
    "UNVERIFIED": "#f0e442",
    "SYNTHETIC": "#56b4e9",
    "FLAKY": "#e69f00",
    "SKIPPED": "#bbbbbb",
    "FAILED": "#d55e00",
    "LOST": "#cc79a7",
}
assert set(LETTER) == set(COLOUR) == set(STATUSES), "every status needs a letter and a colour"
CHART_BARS = 40  # the largest values per chart; every value is in the job's details
HISTORY_ROWS = 300  # history strips on a summarised page: the jobs whose status changed, up to this many
MESSAGE_CHARS = 300  # an error message on a summarised page; the whole one is in the JSON report


def device_key(device: str) -> tuple[int, int, str]:
    """cpu first, then cuda, then cuda:0, cuda:1, ... (numerically), then anything else."""
    if device == "cpu":
        return (0, 0, device)
    if device == "cuda":
        return (1, -1, device)
    m = re.fullmatch(r"cuda:(\d+)", device)
    return (1, int(m.group(1)), device) if m else (2, 0, device)


def marks(row: dict[str, Any]) -> list[str]:
    """What sets a result apart beyond its status: a regression, an unexpected outcome, flakiness."""
    out = []
    if row.get("change") == "regressed":
        out.append("regressed")
    if row.get("unexpected"):
        out.append("unexpected")
    if row.get("flaky"):
        out.append("flaky")
    return out


def cell_label(row: dict[str, Any]) -> str:
    """The text alternative of one matrix cell."""
    text = f"{row['family']} on {row['device']}: {row['status']}"
    if row.get("change") == "regressed":
        text += f", regressed from {row.get('previous_status')}"
    elif row.get("change") == "improved":
        text += f", improved from {row.get('previous_status')}"
    if row.get("unexpected"):
        text += ", unexpected"
    if row.get("flaky"):
        text += ", flaky"
    return text


def bar_chart(title: str, desc: str, items: list[tuple[str, float, str]], unit: str) -> Markup:
    """A horizontal bar chart as inline SVG: items are (label, value, status), largest first."""
    shown = sorted(items, key=lambda it: -it[1])[:CHART_BARS]
    if not shown:
        return Markup("")
    top = max(v for _, v, _ in shown) or 1.0
    label_w, bar_w, row_h, value_w = 260, 420, 18, 90
    width, height = label_w + bar_w + value_w, row_h * len(shown) + 8
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-labelledby="{_svg_id(title)}-t {_svg_id(title)}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_svg_id(title)}-t">{escape(title)}</title>',
        f'<desc id="{_svg_id(title)}-d">{escape(desc)}</desc>',
    ]
    for i, (label, value, status) in enumerate(shown):
        y = 4 + i * row_h
        w = max(1.0, bar_w * value / top)
        short = label if len(label) <= 40 else label[:39] + "…"
        parts.append(
            f"<g><title>{escape(label)}: {value:.2f} {escape(unit)} ({escape(status)})</title>"
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(short)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" '
            f'fill="{COLOUR.get(status, "#888888")}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{value:.2f} {escape(unit)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _svg_id(title: str) -> str:
    return "c-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def view(report: dict[str, Any]) -> dict[str, Any]:
    """Everything the template lays out, computed once."""
    rows: list[dict[str, Any]] = report["rows"]
    compact = len(rows) >= COMPACT_FROM
    # a summarised page has a place for the misses only: they are the ones linked to
    linked = [r for r in rows if r["status"] not in PASSED or marks(r)] if compact else rows
    anchors = {row["job_id"]: f"job-{i}" for i, row in enumerate(linked)}
    devices = sorted({row["device"] for row in rows}, key=device_key)
    by_family: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows if not compact else ():
        by_family[row["family"]][row["device"]] = row
    matrix = []
    for family in sorted(by_family):
        cells = by_family[family]
        archs = sorted({str(r.get("architecture")) for r in cells.values() if r.get("architecture")})
        matrix.append({"family": family, "architecture": ", ".join(archs), "cells": [cells.get(d) for d in devices]})

    arch_counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for row in rows:
        arch_counts[str(row.get("architecture") or "unknown")][row["device"]][str(row["status"])] += 1
    architectures = [
        {"name": arch, "cells": [dict(per_device.get(d, Counter())) for d in devices]}
        for arch, per_device in sorted(arch_counts.items())
    ]

    history_runs = [run_id for run_id, _ in report.get("history", [])]
    history = []
    history_left_out = 0
    if len(history_runs) > 1:
        for row in sorted(rows, key=lambda r: (r["family"], device_key(r["device"]))):
            strip = [(run_id, statuses.get(row["job_id"])) for run_id, statuses in report["history"]]
            if compact and len({s for _, s in strip if s is not None}) < 2:
                continue  # a summarised page shows the jobs whose status changed (absent runs aside)
            history.append({"job_id": row["job_id"], "anchor": anchors.get(row["job_id"]), "strip": strip})
        if compact and len(history) > HISTORY_ROWS:
            history_left_out, history = len(history) - HISTORY_ROWS, history[:HISTORY_ROWS]

    latency, rss, cuda = [], [], []
    for row in rows:
        m = row.get("metrics") or {}
        status = str(row["status"])
        if (v := _number(m.get("latency_ms_p50"))) is not None:
            latency.append((row["job_id"], v, status))
        if (v := _number(m.get("peak_rss_mb"))) is not None:
            rss.append((row["job_id"], v, status))
        if (v := _number(m.get("cuda_peak_allocated_mb"))) is not None:
            cuda.append((row["job_id"], v, status))
    charts = []
    for title, items, unit in (
        ("p50 latency", latency, "ms"),
        ("Peak host memory (RSS)", rss, "MB"),
        ("Peak CUDA memory", cuda, "MB"),
    ):
        if items:
            note = f"the {CHART_BARS} largest of {len(items)}" if len(items) > CHART_BARS else f"all {len(items)}"
            desc = f"{title} per job, {note}, largest first; bars coloured by status."
            charts.append({"title": title, "note": note, "svg": bar_chart(title, desc, items, unit)})

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        err = row.get("error") or {}
        if row["status"] in FAILING or (compact and row["status"] not in PASSED):
            groups[(str(row["status"]), str(err.get("kind") or "no error recorded"))].append(row)
        elif compact and marks(row):  # passing, but regressed, unexpected or flaky
            groups[(str(row["status"]), " ".join(marks(row)))].append(row)
    failures = [
        {"status": status, "kind": kind, "rows": members}
        for (status, kind), members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    return {
        "compact": compact,
        "history_left_out": history_left_out,
        "misses": sum(len(g["rows"]) for g in failures) if compact else None,
        "devices": devices,
        "matrix": matrix,
        "architectures": architectures,
        "history_runs": history_runs,
        "history": history,
        "charts": charts,
        "failures": failures,
        "anchors": anchors,
        "unexpected": [r for r in rows if r.get("unexpected")],
        "flaky": [r for r in rows if r.get("flaky")],
    }


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _plain(value: Any) -> str:
    """A value from an extension field (baseline, expectation) as one line of text."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return "—" if value is None else str(value)


@cache
def _env() -> jinja2.Environment:
    num = partial(number, empty="—")
    filters: dict[str, Callable[..., Any]] = {
        "when": when,
        "num": num,
        "plain": _plain,
        "marks": marks,
        "label": cell_label,
        "short": _short,
    }
    return environment(True, filters, LETTER=LETTER, COLOUR=COLOUR)


def render_html(report: dict[str, Any]) -> str:
    return _env().get_template("report.html.j2").render(r=report, v=view(report))
