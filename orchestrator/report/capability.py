"""The capability matrix of a run: per device, one row per family (or architecture class) and one
column per variant (works / mismatch / error / n.a., with a mark where the verdict contradicts the
class's own claim), and the findings first: claims broken, works unclaimed, reduced precisions
that gave NaN/Inf or broke the quality gate, and variants that worked in the job's baseline and
no longer do (regressions, attributed like status changes by orchestrator/attribution.py).

Reads result["variants"] (workers/variants.py; schema in docs/variants.md). Empty when no job of
the run asked for variants. A record that does not follow the schema (fleet/records.variants_problem)
is shown as corrupt -- its row says so and a `corrupt_record` finding says what is wrong -- and
never read further."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fleet.protocol import Job, Result
from fleet.records import variants_problem
from orchestrator import attribution

VERDICTS = ("works", "mismatch", "error", "not_applicable")
SHORT = {"works": "ok", "mismatch": "≠", "error": "err", "not_applicable": "n/a"}
FINDING_ORDER = {
    "corrupt_record": 0,
    "claim_broken": 1,
    "works_unclaimed": 2,
    "non_finite": 3,
    "precision_quality": 4,
    "regression": 5,
}


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(r: dict[str, Any], contradicts: str | None) -> dict[str, Any]:
    verdict = str(r["verdict"])
    title = verdict.replace("_", " ")
    if verdict == "error":
        title += f" ({r.get('kind')}): {str(r.get('message', ''))[:160]}"
    elif verdict == "not_applicable":
        title += f": {r.get('reason', '')}"
    elif all(_num(r.get(k)) for k in ("max_abs_diff", "max_rel_diff", "atol", "rtol")):
        title += (
            f": max abs {r['max_abs_diff']:.3g}, rel {r['max_rel_diff']:.3g} (atol {r['atol']:g}, rtol {r['rtol']:g})"
        )
    elif r.get("reason"):
        title += f": {r['reason']}"
    if r.get("kernel"):
        title += f"; kernel {r['kernel']}"
    if _num(r.get("speed_vs_reference")):
        title += f"; {r['speed_vs_reference']:g}x the reference's speed"
    if contradicts:
        title += f"; contradicts {contradicts}"
    return {
        "verdict": verdict,
        "short": SHORT.get(verdict, verdict),
        "kind": r.get("kind"),
        "speed": r.get("speed_vs_reference") if _num(r.get("speed_vs_reference")) else None,
        "mark": contradicts,
        "title": title,
    }


def build(
    results: list[Result],
    previous: dict[str, Result] | None = None,
    specs: dict[tuple[str, str], Job] | None = None,
    baseline_runs: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The matrix and the findings, as plain data for every renderer. previous: each job's
    baseline result; specs and baseline_runs as orchestrator.report.model has them."""
    previous, specs, baseline_runs = previous or {}, specs or {}, baseline_runs or {}
    with_variants = [r for r in results if r.get("variants") is not None]
    if not with_variants:
        return {}
    columns: list[str] = []
    per_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    found: list[dict[str, Any]] = []
    for r in sorted(with_variants, key=lambda r: (r["device"], r["family"])):
        where = {
            "family": r["family"],
            "device": r["device"],
            "job_id": r["job_id"],
            "architecture": r.get("architecture"),
        }
        problem = variants_problem(r["variants"])
        if problem is not None:
            per_device[r["device"]].append({**_row(r, {}), "cells": {}, "flagged": True, "corrupt": problem})
            found.append({**where, "finding": "corrupt_record", "variant": "", "detail": problem})
            continue
        record: dict[str, Any] = r["variants"]
        marks = {(f["variant"], f["finding"]) for f in record.get("findings", [])}
        cells: dict[str, dict[str, Any]] = {}
        for v in record.get("results", []):
            name = str(v["variant"])
            if name not in columns:
                columns.append(name)
            contradicts = next(
                (f for f in ("claim_broken", "works_unclaimed") if (name, f) in marks),
                None,
            )
            cells[name] = _cell(v, contradicts)
            counts[r["device"]][name][str(v["verdict"])] += 1
        per_device[r["device"]].append({**_row(r, record.get("reference", {})), "cells": cells, "flagged": bool(marks)})
        found.extend({**where, **f} for f in record.get("findings", []))
        found.extend(_regressions(r, previous.get(r["job_id"]), specs, baseline_runs.get(r["job_id"]), where))
    found.sort(key=lambda f: (FINDING_ORDER.get(f["finding"], 9), f["device"], f["family"], f["variant"]))
    devices = {}
    for device, rows in per_device.items():
        rows.sort(key=lambda row: (not row["flagged"], row["family"]))  # rows with findings first
        devices[device] = {
            "rows": rows,
            "counts": {name: {v: counts[device][name].get(v, 0) for v in VERDICTS} for name in columns},
        }
    return {"columns": columns, "devices": devices, "findings": found, "summary": Counter(f["finding"] for f in found)}


def _row(r: Result, reference: dict[str, Any]) -> dict[str, Any]:
    return {
        "family": r["family"],
        "job_id": r["job_id"],
        "architecture": r.get("architecture"),
        "reference": reference,
        "corrupt": None,
    }


def _regressions(
    current: Result,
    before: Result | None,
    specs: dict[tuple[str, str], Job],
    baseline_run: str | None,
    where: dict[str, Any],
) -> list[dict[str, Any]]:
    """Variants that worked in the baseline and no longer do."""
    if before is None or before.get("variants") is None or variants_problem(before["variants"]) is not None:
        return []
    was = {v["variant"]: v["verdict"] for v in before["variants"].get("results", [])}
    out = []
    for v in current["variants"].get("results", []):
        if was.get(v["variant"]) == "works" and v["verdict"] in ("mismatch", "error"):
            attributed = attribution.attribute(
                before,
                current,
                specs.get((str(baseline_run), current["job_id"])),
                specs.get((current["run_id"], current["job_id"])),
            )
            summary = attributed["summary"].split("; ", 1)[-1]
            detail = f"works → {v['verdict']}" + (f" ({v.get('kind')})" if v.get("kind") else "")
            out.append(
                {
                    **where,
                    "finding": "regression",
                    "variant": v["variant"],
                    "verdict": v["verdict"],
                    "detail": f"{detail}; {summary}",
                    "attribution": attributed["changed"],
                }
            )
    return out
