"""Per-job baselines and status history.

A job's baseline is the newest earlier run that has a result for that same job, not simply the
run before: a family REAL on Monday, absent from Tuesday's run (another family was tested), and
SYNTHETIC on Wednesday has regressed against Monday. A job's history is its outcomes in the
`window` runs before this one that had it.

Reports take the history from the per-job summaries (orchestrator.summaries: one small record per
job). `collect` derives the same history by reading every earlier run in the window: the
definition the summaries are tested against, and the way when the summaries do not cover the
window (a report of an old run, an earlier run still unfinished).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet.protocol import FAILING, PASSED, Result, Status
from fleet.store import ResultStore

WINDOW_RUNS = 30  # how far back (in runs) baselines and history look
CHUNK = 10  # earlier runs read per round trip
FROM_RESULT: Any = object()  # Sample.key when the result itself tells the weights
PASSING = PASSED


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC, second precision, with a Z."""
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sample:
    """One outcome of a job. result may be the whole result or, from a summary, only what the
    history and trends read (status, device, error kind, trend metrics) with the weights key."""

    run_id: str
    started_at: float
    result: Result
    key: Any = FROM_RESULT  # the weights key (orchestrator.trends.weights_key) when result lacks its facts

    @property
    def status(self) -> str:
        return str(self.result["status"])

    def ref(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "date": iso(self.started_at), "status": self.status}


@dataclass
class JobHistory:
    """A job's outcomes in the current run and the earlier runs that had it, newest first."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def baseline(self) -> Sample | None:
        return self.samples[1] if len(self.samples) > 1 else None

    def summary(self) -> dict[str, Any]:
        """streak_start: the oldest run of the current unbroken streak of this status;
        last_success: the newest REAL or SYNTHETIC outcome (this run included);
        first_failure: the first FAILED, LOST or FLAKY outcome after that success."""
        if not self.samples:
            return {"streak_start": None, "first_failure": None, "last_success": None, "runs_seen": 0}
        current = self.samples[0].status
        streak = self.samples[0]
        for s in self.samples[1:]:
            if s.status != current:
                break
            streak = s
        last_success = next((s for s in self.samples if s.status in PASSING), None)
        first_failure = None
        for s in self.samples:
            if s is last_success:
                break
            if s.status in (*FAILING, Status.FLAKY):
                first_failure = s
        return {
            "streak_start": streak.ref(),
            "first_failure": first_failure.ref() if first_failure else None,
            "last_success": last_success.ref() if last_success else None,
            "runs_seen": len(self.samples),
        }


def collect(
    store: ResultStore,
    run_id: str,
    started_at: float,
    results: list[Result],
    window: int = WINDOW_RUNS,
) -> dict[str, JobHistory]:
    """Each job's history: its result in this run, then in each of the `window` earlier runs that
    had it (every one of them read: the full-read way, see the module's docstring)."""
    histories = {r["job_id"]: JobHistory([Sample(run_id, started_at, r)]) for r in results}
    earlier = store.runs_before(run_id, window)
    pending = sorted(histories)
    for i in range(0, len(earlier), CHUNK):
        chunk = earlier[i : i + CHUNK]
        found = store.results_of([rid for rid, _ in chunk], pending)
        for rid, ts in chunk:
            for jid, result in found[rid].items():
                histories[jid].samples.append(Sample(rid, ts, result))
    return histories
