"""JUnit XML: one testcase per job, FAILED and LOST as failures, SKIPPED as skipped."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from fleet.protocol import FAILING, Status


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0, UTC).isoformat(timespec="seconds")


def to_junit(report: dict[str, Any]) -> str:
    s = report["summary"]
    suite = ET.Element(
        "testsuite",
        {
            "name": f"model-fleet {report['run_id']}",
            "tests": str(s["total"]),
            "failures": str(s["FAILED"] + s["LOST"]),
            "skipped": str(s["SKIPPED"]),
            "timestamp": _iso(report["started_at"]),
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
        if r["status"] in FAILING:
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
