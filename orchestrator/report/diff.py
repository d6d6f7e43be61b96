"""Status and metric changes between two runs.

Metrics are compared only between results on the same weights (weights_sha256, or the same
synthetic model) and the same device: a REAL -> SYNTHETIC switch is a different model, not a
latency change. Each comparison left out says why.
"""

from __future__ import annotations

from typing import Any

from fleet.protocol import Result, change
from fleet.store import ResultStore
from orchestrator.trends import weights_key

DIFF_METRICS = ("latency_ms_p50", "load_s", "peak_rss_mb", "cuda_peak_allocated_mb")


def _why_not_comparable(ra: Result, rb: Result) -> str | None:
    if ra["device"] != rb["device"]:
        return f"device {ra['device']} -> {rb['device']}"
    ka, kb = weights_key(ra), weights_key(rb)
    if ka is None or kb is None:
        return "no weights measured" if ka == kb else f"weights {ka or 'none'} -> {kb or 'none'}"
    if ka != kb:
        return f"weights {ka[:19]}… -> {kb[:19]}…"
    return None


def diff(store: ResultStore, run_a: str, run_b: str, threshold: float = 0.2) -> dict[str, Any]:
    """Status changes and metric changes beyond `threshold` (relative) from run_a to run_b."""
    a = {r["job_id"]: r for r in store.results(run_a)}
    b = {r["job_id"]: r for r in store.results(run_b)}
    status_changes, metric_changes, not_compared = [], [], []
    for jid in sorted(set(a) | set(b)):
        ra, rb = a.get(jid), b.get(jid)
        sa, sb = (ra["status"] if ra else None), (rb["status"] if rb else None)
        if sa != sb:
            status_changes.append({"job_id": jid, "from": sa, "to": sb, "change": change(sa, sb) if sb else "removed"})
        if not (ra and rb):
            continue
        why = _why_not_comparable(ra, rb)
        if why is not None:
            if any(m in ra["metrics"] or m in rb["metrics"] for m in DIFF_METRICS):
                not_compared.append({"job_id": jid, "reason": why})
            continue
        for m in DIFF_METRICS:
            va, vb = ra["metrics"].get(m), rb["metrics"].get(m)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va > 0:
                rel = (vb - va) / va
                if abs(rel) > threshold:
                    metric_changes.append({"job_id": jid, "metric": m, "from": va, "to": vb, "relative": round(rel, 3)})
    return {
        "from": run_a,
        "to": run_b,
        "status_changes": status_changes,
        "metric_changes": metric_changes,
        "metrics_not_compared": not_compared,
    }
