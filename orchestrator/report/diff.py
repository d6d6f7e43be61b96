"""Status and metric changes between two runs."""

from __future__ import annotations

from typing import Any

from fleet.protocol import change
from fleet.store import ResultStore

DIFF_METRICS = ("latency_ms_p50", "load_s", "peak_rss_mb", "cuda_peak_allocated_mb")


def diff(store: ResultStore, run_a: str, run_b: str, threshold: float = 0.2) -> dict[str, Any]:
    """Status changes and metric changes beyond `threshold` (relative) from run_a to run_b."""
    a = {r["job_id"]: r for r in store.results(run_a)}
    b = {r["job_id"]: r for r in store.results(run_b)}
    status_changes, metric_changes = [], []
    for jid in sorted(set(a) | set(b)):
        ra, rb = a.get(jid), b.get(jid)
        sa, sb = (ra["status"] if ra else None), (rb["status"] if rb else None)
        if sa != sb:
            status_changes.append({"job_id": jid, "from": sa, "to": sb, "change": change(sa, sb) if sb else "removed"})
        if ra and rb:
            for m in DIFF_METRICS:
                va, vb = ra["metrics"].get(m), rb["metrics"].get(m)
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va > 0:
                    rel = (vb - va) / va
                    if abs(rel) > threshold:
                        metric_changes.append(
                            {"job_id": jid, "metric": m, "from": va, "to": vb, "relative": round(rel, 3)}
                        )
    return {"from": run_a, "to": run_b, "status_changes": status_changes, "metric_changes": metric_changes}
