"""Reports computed from the store: markdown (Jinja2 templates), JSON and JUnit XML.

The previous run is the baseline; regressions come first; every status shows its evidence
(model, source, revision, device read back, attempt trail, metrics).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from fleet.protocol import FAILING, Status, change
from fleet.store import ResultStore

CHANGE_ORDER = {"regressed": 0, "new": 1, "improved": 2, "unchanged": 3}
AGREEMENT_ATOL = 1e-3
HISTORY_RUNS = 10


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


def number(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@cache
def _env() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(resources.files("orchestrator.templates")))
    env = jinja2.Environment(
        loader=loader,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(md=md, code=code, mermaid=mermaid_label, when=when, num=number)
    return env


# -- the report model ---------------------------------------------------------------------
def build(store: ResultStore, run_id: str, history_runs: int = HISTORY_RUNS) -> dict[str, Any]:
    meta = store.meta(run_id)
    results = store.results(run_id)
    previous_id = store.previous_run_id(run_id)
    previous_results = store.results(previous_id) if previous_id else []
    loaded = {run_id: results} | ({previous_id: previous_results} if previous_id else {})
    history = _history(store, run_id, history_runs, loaded)
    return assemble(meta, results, previous_id, {r["job_id"]: r for r in previous_results}, history)


def assemble(
    meta: dict[str, Any],
    results: list[dict[str, Any]],
    previous_id: str | None,
    previous: dict[str, dict[str, Any]],
    history: list[tuple[str, dict[str, str]]],
) -> dict[str, Any]:
    rows = []
    for r in results:
        prev = previous.get(r["job_id"])
        prev_status = prev["status"] if prev else None
        rows.append({**r, "previous_status": prev_status, "change": change(prev_status, r["status"])})
    rows.sort(key=lambda r: (CHANGE_ORDER[r["change"]], r["family"], r["device"]))
    counts = Counter(r["status"] for r in results)
    versions = sorted(
        {
            (r["environment"].get("torch"), r["environment"].get("transformers"), r["environment"].get("cuda"))
            for r in results
            if r.get("environment")
        },
        key=str,
    )
    env_keys = ("host", "platform", "python", "torch", "transformers", "cuda", "gpu_name", "gpu_memory_mb")
    environments = sorted(
        {tuple(r["environment"].get(k) for k in env_keys) for r in results if r.get("environment")}, key=str
    )
    return {
        "run_id": meta["run_id"],
        "started_at": meta["started_at"],
        "finished_at": meta.get("finished_at"),
        "deadline": meta.get("deadline"),
        "catalog": meta.get("catalog"),
        "origin": meta.get("origin"),
        "previous_run_id": previous_id,
        "workers": meta.get("workers_at_submit", []),
        "versions": [{"torch": t, "transformers": tr, "cuda": c} for t, tr, c in versions],
        "environments": [dict(zip(env_keys, e, strict=True)) for e in environments],
        "summary": {s.value: counts.get(s.value, 0) for s in Status} | {"total": len(results)},
        "regressions": [r for r in rows if r["change"] == "regressed"],
        "rows": rows,
        "agreement": agreement(results),
        "history": history,
        "results": results,
    }


def _history(
    store: ResultStore, run_id: str, limit: int, loaded: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, dict[str, str]]]:
    """Statuses of the last `limit` runs up to run_id, oldest first (reusing results already read)."""
    ids = store.run_ids(1000)
    if run_id in ids:
        ids = ids[ids.index(run_id) :]
    out = []
    for rid in reversed(ids[:limit]):
        results = loaded[rid] if rid in loaded else store.results(rid)
        out.append((rid, {r["job_id"]: r["status"] for r in results}))
    return out


def agreement(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the same synthetic weights ran on cpu and on cuda, do the outputs agree?"""
    by_family: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r["status"] == Status.SYNTHETIC and r.get("output"):
            by_family.setdefault(r["family"], []).append(r)
    out = []
    for family, rs in sorted(by_family.items()):
        cpu = next((r for r in rs if r["device"] == "cpu"), None)
        for other in (r for r in rs if r["device"] != "cpu"):
            if cpu is None or cpu["revision"] != other["revision"]:
                continue
            out.append(
                {
                    "family": family,
                    "devices": f"cpu vs {other['device']}",
                    **compare_outputs(cpu["output"], other["output"]),
                }
            )
    return out


def compare_outputs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    diffs: list[float] = []
    exact = []
    for key in sorted(set(a) & set(b)):
        va, vb = a[key], b[key]
        if isinstance(va, list) and va and all(isinstance(x, (int, float)) for x in va + vb):
            if key == "tokens":
                exact.append(va == vb)
            elif len(va) == len(vb):
                diffs.append(max(abs(x - y) for x, y in zip(va, vb, strict=True)))
    max_diff = max(diffs) if diffs else None
    agree = all(exact) and (max_diff is None or max_diff <= AGREEMENT_ATOL)
    return {"agree": agree, "max_abs_diff": max_diff, "tokens_equal": all(exact) if exact else None}


# -- renderers ------------------------------------------------------------------------------
def render_markdown(report: dict[str, Any]) -> str:
    return _env().get_template("report.md.j2").render(r=report, FAILING=[str(s) for s in FAILING])


def to_json(report: dict[str, Any]) -> str:
    keep = (
        "run_id",
        "started_at",
        "finished_at",
        "catalog",
        "origin",
        "previous_run_id",
        "workers",
        "versions",
        "environments",
        "summary",
        "agreement",
        "results",
    )
    data = {k: report[k] for k in keep}
    data["changes"] = [
        {"job_id": r["job_id"], "previous": r["previous_status"], "current": r["status"], "change": r["change"]}
        for r in report["rows"]
    ]
    return json.dumps(data, indent=2, sort_keys=False, default=str) + "\n"


def to_junit(report: dict[str, Any]) -> str:
    s = report["summary"]
    suite = ET.Element(
        "testsuite",
        {
            "name": f"model-fleet {report['run_id']}",
            "tests": str(s["total"]),
            "failures": str(s["FAILED"] + s["LOST"]),
            "skipped": str(s["SKIPPED"]),
            "timestamp": when(report["started_at"]),
        },
    )
    for r in report["rows"]:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"model_fleet.{r['family']}",
                "name": r["job_id"],
                "time": str(r.get("metrics", {}).get("job_s", 0)),
            },
        )
        err = r.get("error") or {}
        if r["status"] in (Status.FAILED, Status.LOST):
            node = ET.SubElement(
                case, "failure", {"type": err.get("kind", r["status"]), "message": err.get("message", "")}
            )
            node.text = json.dumps(r.get("attempts", []), indent=1)
        elif r["status"] == Status.SKIPPED:
            ET.SubElement(case, "skipped", {"message": err.get("message", "")})
        ET.SubElement(
            case, "system-out"
        ).text = f"{r['status']} model={r.get('model_used')} source={r.get('source')} revision={r.get('revision')}"
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


RENDERERS = {"md": render_markdown, "json": to_json, "junit": to_junit}


def save_run_report(store: ResultStore, run_id: str, out_dir: Path) -> tuple[Path, Path]:
    """Render a run once: markdown kept in Redis, and RUN_ID.md and RUN_ID.json in out_dir."""
    data = build(store, run_id)
    markdown = render_markdown(data)
    store.save_report(run_id, markdown)
    md_path, json_path = out_dir / f"{run_id}.md", out_dir / f"{run_id}.json"
    write_atomic(md_path, markdown)
    write_atomic(json_path, to_json(data))
    return md_path, json_path


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing: a temp file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def diff(store: ResultStore, run_a: str, run_b: str, threshold: float = 0.2) -> dict[str, Any]:
    """Status changes and metric changes beyond `threshold` (relative) from run_a to run_b."""
    a = {r["job_id"]: r for r in store.results(run_a)}
    b = {r["job_id"]: r for r in store.results(run_b)}
    status_changes, metric_changes = [], []
    for jid in sorted(set(a) | set(b)):
        ra, rb = a.get(jid), b.get(jid)
        sa, sb = (ra or {}).get("status"), (rb or {}).get("status")
        if sa != sb:
            status_changes.append({"job_id": jid, "from": sa, "to": sb, "change": change(sa, sb) if sb else "removed"})
        if ra and rb:
            for m in ("latency_ms_p50", "load_s", "peak_rss_mb", "cuda_peak_allocated_mb"):
                va, vb = ra["metrics"].get(m), rb["metrics"].get(m)
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va > 0:
                    rel = (vb - va) / va
                    if abs(rel) > threshold:
                        metric_changes.append(
                            {"job_id": jid, "metric": m, "from": va, "to": vb, "relative": round(rel, 3)}
                        )
    return {"from": run_a, "to": run_b, "status_changes": status_changes, "metric_changes": metric_changes}
