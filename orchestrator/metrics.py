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
from orchestrator import accounting, liveness, runs
from orchestrator.report.coverage import is_harness_gap


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    """A sample value at full precision (a timestamp to the millisecond, not `:g`'s 6 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        return str(value)
    number = float(value)
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"  # Prometheus' spelling
    return repr(number)


def _metric(
    out: list[str], name: str, kind: str, help_text: str, samples: Sequence[tuple[dict[str, Any], float]]
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{text}}} {_value(value)}" if text else f"{name} {_value(value)}")


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
    live = store.registry.live_workers()
    _metric(out, "fleet_workers_live", "gauge", "Workers with a live heartbeat.", [({}, len(live))])
    _metric(
        out,
        "fleet_workers_stuck",
        "gauge",
        "Live workers whose consumer has not polled the broker with a free slot (orchestrator.liveness).",
        [({}, sum(liveness.stuck_since(w, now) is not None for w in live))],
    )
    _metric(
        out,
        "fleet_queue_running",
        "gauge",
        "Jobs running now, per queue they came from (what KEDA adds to the queue length).",
        [({"queue": q}, store.ledger.running_count(q)) for q in QUEUES],
    )
    _accounting(out, accounting.collect(store, run_id, current))
    _metric(out, "fleet_metrics_generated_timestamp_seconds", "gauge", "When this was written.", [({}, round(now, 3))])
    return "\n".join(out) + "\n"


def _accounting(out: list[str], acc: dict[str, Any]) -> None:
    """The run's accounting (orchestrator.accounting): completeness, busy and idle time, queue wait."""
    c = acc["completeness"]
    _metric(out, "fleet_run_jobs_final", "gauge", "Jobs of the run with a final result.", [({}, c["final"])])
    _metric(
        out,
        "fleet_run_jobs_missing",
        "gauge",
        "Jobs of the run without a final result, by why (no worker, expired, lost, pending, corrupt record).",
        [({"reason": why}, n) for why, n in c["reasons"].items()],
    )
    first = acc["time_to_first_result_s"]
    if first is not None:
        help_text = "From submission to the first result."
        _metric(out, "fleet_run_time_to_first_result_seconds", "gauge", help_text, [({}, first)])
    for what in ("busy", "idle"):
        _metric(
            out,
            f"fleet_run_device_{what}_seconds",
            "gauge",
            f"Device-seconds {what} in the run, per device type (from the jobs' own timestamps).",
            [({"device_type": d["device_type"]}, d[f"{what}_s"]) for d in acc["devices"]],
        )
        _metric(
            out,
            f"fleet_run_worker_{what}_seconds",
            "gauge",
            f"Seconds {what} in the run, per worker (slots times its time in the run, for idle).",
            [({"worker": w["name"]}, w[f"{what}_s"]) for w in acc["workers"]],
        )
    _metric(
        out,
        "fleet_run_black_holes",
        "gauge",
        "Workers that took jobs and answered none while others did, or whose jobs keep dying.",
        [({}, len(acc["black_holes"]))],
    )
    name = "fleet_run_queue_wait_seconds"
    out.append(f"# HELP {name} Queue wait of the run's jobs (sent to started), per queue.")
    out.append(f"# TYPE {name} histogram")
    for q in acc["queue_wait"]:
        queue = _label(q["queue"])
        for le, count in q["histogram"]:
            bound = le if isinstance(le, str) else f"{le:g}"  # constants, exact in :g; the last "+Inf"
            out.append(f'{name}_bucket{{queue="{queue}",le="{bound}"}} {count}')
        out.append(f'{name}_sum{{queue="{queue}"}} {_value(q["sum_s"])}')
        out.append(f'{name}_count{{queue="{queue}"}} {q["jobs"]}')
