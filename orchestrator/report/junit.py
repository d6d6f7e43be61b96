"""JUnit XML: one testcase per job, FAILED and LOST as failures, SKIPPED as skipped.

Timestamps are ISO 8601 (UTC, without offset, as the JUnit schema's xs:dateTime is read by
most tools). A FLAKY job passed on a rerun: it is reported as passed with one <flakyFailure>
per failed run (the Maven Surefire convention); a FAILED job that was rerun carries one
<rerunFailure> per rerun. With expectations, an expected FAILED is reported as skipped with
its reason, and an unexpected pass as a failure.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from fleet.protocol import FAILING, Status


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _rerun_nodes(case: ET.Element, tag: str, reruns: list[dict[str, Any]]) -> None:
    for x in reruns:
        if x.get("status") in FAILING:
            kind, message = str(x.get("error_kind") or x["status"]), str(x.get("message") or "")
            node = ET.SubElement(case, tag, {"type": kind, "message": message})
            node.text = f"run {x.get('rerun')} on {x.get('worker')} (delivery {x.get('delivery')})"


def to_junit(report: dict[str, Any]) -> str:
    s = report["summary"]
    rows = report["rows"]

    def failing(r: dict[str, Any]) -> bool:
        exp = r.get("expectation")
        if exp is not None:
            return bool(exp["unexpected"])
        return r["status"] in FAILING

    def skipped(r: dict[str, Any]) -> bool:
        return not failing(r) and (r["status"] == Status.SKIPPED or r["status"] in FAILING)

    suite = ET.Element(
        "testsuite",
        {
            "name": f"model-fleet {report['run_id']}",
            "tests": str(s["total"]),
            "failures": str(sum(failing(r) for r in rows)),
            "skipped": str(sum(skipped(r) for r in rows)),
            "flaky": str(s.get(Status.FLAKY, 0)),
            "timestamp": _iso(report["started_at"]),
        },
    )
    acc = report.get("accounting")
    if acc:  # completeness first (orchestrator/accounting.py): an incomplete run says so
        props = ET.SubElement(suite, "properties")
        c = acc["completeness"]
        for name, value in (
            ("incomplete", report.get("incomplete") or ""),
            ("jobs_asked", c["asked"]),
            ("jobs_with_final_result", c["final"]),
        ):
            ET.SubElement(props, "property", {"name": name, "value": str(value)})
    for r in rows:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"model_fleet.{r['family']}",
                "name": r["job_id"],
                "time": str(r.get("metrics", {}).get("job_s", 0)),
                "timestamp": _iso(r.get("started_at")),
            },
        )
        err = r.get("error") or {}
        exp = r.get("expectation") or {}
        reruns = r.get("reruns") or []
        if failing(r):
            message = err.get("message", "")
            if exp.get("unexpected") and exp.get("kind") == "unexpected pass":
                message = f"unexpected pass: {r['status']}, expected {exp.get('expected')} ({exp.get('reason')})"
            kind = err.get("kind", r["status"])
            if exp.get("unexpected") and exp.get("kind") == "unexpected variant":
                kind, message = (
                    "unexpected_variant",
                    "unexpected variant: "
                    + "; ".join(
                        f"{x['variant']} {x['got']}, expected {x['expected']}" for x in exp.get("variants", [])
                    ),
                )
            node = ET.SubElement(case, "failure", {"type": kind, "message": message})
            node.text = json.dumps(r.get("attempts", []), indent=1)
            _rerun_nodes(case, "rerunFailure", reruns[1:])
        elif skipped(r):
            why = err.get("message", "")
            if exp.get("expected"):
                why = f"expected {exp['expected']}: {exp.get('reason')}; {why}"
            ET.SubElement(case, "skipped", {"message": why})
        elif r["status"] == Status.FLAKY:
            _rerun_nodes(case, "flakyFailure", reruns)
        out = f"{r['status']} model={r.get('model_used')} source={r.get('source')} revision={r.get('revision')}"
        ident = r.get("identity")
        if r["status"] == Status.UNVERIFIED and isinstance(ident, dict):
            out += "".join(f"\nunverified: {why}" for why in ident.get("unverified") or [])
        ET.SubElement(case, "system-out").text = out
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
