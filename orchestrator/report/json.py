"""The JSON report: the run, its summary and every result with its full evidence."""

from __future__ import annotations

import json
from typing import Any


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
