"""The JSON report: the run, its summary and every result with its full evidence.

Timestamps are ISO 8601 UTC strings ("2026-09-22T14:13:20Z"); the Unix seconds they came from
are kept next to them as *_unix. The document is indented, except that each entry of "results"
and "changes" is one line (encoded in C: several times faster than indenting 10,000 results).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from orchestrator.baselines import iso
from orchestrator.output import dumps, finite

__all__ = ["dumps", "finite", "to_json"]

TIMESTAMPS = ("started_at", "finished_at")


def _stamped(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for key in TIMESTAMPS:
        if key in out and not isinstance(out[key], str):
            out[f"{key}_unix"] = out[key]
            out[key] = iso(out[key])
    return out


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
    data = _stamped({k: report[k] for k in keep})
    data["results"] = [_stamped(dict(r)) for r in report["results"]]
    data["changes"] = [
        {
            "job_id": r["job_id"],
            "previous": r["previous_status"],
            "current": r["status"],
            "change": r["change"],
            "baseline": r.get("baseline"),
            "history": r.get("history"),
            "attribution": r.get("attribution"),
            "expectation": r.get("expectation"),
            "trends": r.get("trends") or {},
        }
        for r in report["rows"]
    ]
    data["expectations"] = report.get("expectations")
    data["unexpected"] = [r["job_id"] for r in report.get("unexpected", [])]
    data["flaky"] = [
        {"job_id": r["job_id"], "pass_ratio": r.get("pass_ratio"), "reruns": r.get("reruns", [])}
        for r in report.get("flaky", [])
    ]
    data["metric_regressions"] = report.get("metric_regressions", [])
    data["trend_settings"] = report.get("trend_settings")
    if report.get("capability"):  # jobs that ran variants: the matrix and its findings (docs/variants.md)
        data["capability"] = report["capability"]
    if report.get("architectures"):  # an architecture run: coverage and the workers' transformers
        data["architectures"] = report["architectures"]
        data["transformers"] = report.get("transformers")
    if report.get("accounting"):  # orchestrator/accounting.py; an incomplete run says so first
        c = report["accounting"]["completeness"]
        head = {"incomplete": report.get("incomplete"), "jobs_asked": c["asked"], "jobs_with_final_result": c["final"]}
        data = head | data | {"accounting": report["accounting"]}
    if report.get("corrupt_meta"):  # the run's meta could not be read (fleet/records.py)
        data["corrupt_meta"] = report["corrupt_meta"]
    lines = {}
    for key in ("results", "changes"):  # one line per entry, spliced in where a marker stands
        marker = f"@@{key}-{uuid.uuid4().hex}@@"
        entries = ",\n".join("    " + dumps(e) for e in data[key])
        lines[json.dumps(marker)] = f"[\n{entries}\n  ]" if entries else "[]"
        data[key] = marker
    text = dumps(data, indent=2, sort_keys=False)
    for marker, value in lines.items():
        text = text.replace(marker, value, 1)
    return text + "\n"
