"""Prometheus metrics of a run, in the text exposition format: jobs by status, run duration and
state, regressions, queue lengths and live workers. `orchestrator metrics` prints them, and the
beat writes them as fleet.prom beside its reports for node-exporter's textfile collector
(`--collector.textfile.directory=REPORTS_DIR`).

One file holds the latest run only, and the run id is a label of `fleet_run_info` alone: a series
per run id would grow without end, and two .prom files with the same series break the collector.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fleet.devices import QUEUES
from fleet.protocol import STATUSES, change
from fleet.store import ResultStore
from orchestrator import runs
from orchestrator.report.coverage import is_harness_gap


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric(
    out: list[str], name: str, kind: str, help_text: str, samples: Sequence[tuple[dict[str, Any], float]]
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")


def exposition(store: ResultStore, run_id: str, now: float | None = None) -> str:
    """The metrics text for one run (and the fleet's queues and workers as they are now)."""
    now = time.time() if now is None else now
    current = runs.view(store, run_id)  # reading never writes
    meta, results = current.meta, current.results
    counts = {s: 0 for s in STATUSES} | {str(k): v for k, v in current.counts.items()}
    started = float(meta["started_at"])
    finished = meta.get("finished_at")
    previous_id = store.previous_run_id(run_id)
    before = store.results(previous_id) if previous_id else []
    previous = {r["job_id"]: str(r["status"]) for r in before}
    gaps = {r["job_id"] for r in [*before, *results] if is_harness_gap(r)}  # never a regression
    regressions = sum(
        change(previous.get(r["job_id"]), str(r["status"])) == "regressed" and r["job_id"] not in gaps for r in results
    )
    out: list[str] = []
    _metric(
        out,
        "fleet_run_info",
        "gauge",
        "The run these metrics describe (value 1).",
        [({"run_id": run_id, "origin": meta.get("origin") or "", "catalog": meta.get("catalog") or ""}, 1)],
    )
    _metric(
        out,
        "fleet_run_jobs",
        "gauge",
        "Jobs of the run by status (pending: no result yet).",
        [({"status": s}, n) for s, n in counts.items()] + [({"status": "pending"}, current.total - len(results))],
    )
    _metric(out, "fleet_run_jobs_total", "gauge", "Jobs submitted in the run.", [({}, current.total)])
    _metric(out, "fleet_run_finished", "gauge", "1 when the run has finished.", [({}, int(current.finished))])
    _metric(out, "fleet_run_started_timestamp_seconds", "gauge", "When the run started.", [({}, started)])
    # a run past its deadline that nobody has finalised yet ended at its deadline
    end = float(finished) if finished else (min(now, float(meta["deadline"])) if current.finished else now)
    _metric(
        out,
        "fleet_run_duration_seconds",
        "gauge",
        "From submission to the run's end (so far, while it runs).",
        [({}, round(end - started, 3))],
    )
    _metric(
        out, "fleet_run_regressions", "gauge", "Jobs whose status is worse than in the run before.", [({}, regressions)]
    )
    _metric(
        out,
        "fleet_queue_length",
        "gauge",
        "Jobs waiting in each broker queue (not yet taken by a worker).",
        [({"queue": q}, store.transport.queue_length(q)) for q in QUEUES],
    )
    _metric(
        out, "fleet_workers_live", "gauge", "Workers with a live heartbeat.", [({}, len(store.registry.live_workers()))]
    )
    _metric(out, "fleet_metrics_generated_timestamp_seconds", "gauge", "When this was written.", [({}, round(now, 3))])
    return "\n".join(out) + "\n"
