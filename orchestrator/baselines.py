"""Per-job baselines and status history.

A job's baseline is the newest earlier run that has a result for that same job, not simply the
run before: a family REAL on Monday, absent from Tuesday's run (another family was tested), and
SYNTHETIC on Wednesday has regressed against Monday. Earlier runs are read newest first, a few
at a time and only for the jobs still looking, until every job is settled or the window (in
runs) is exhausted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet.protocol import FAILING, PASSED, Result, Status
from fleet.store import ResultStore

WINDOW_RUNS = 30  # how far back (in runs) baselines and history look
CHUNK = 10  # earlier runs read per round trip
PASSING = PASSED


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC, second precision, with a Z."""
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sample:
    run_id: str
    started_at: float
    result: Result

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

    def settled(self, need_samples: int) -> bool:
        """Nothing more to learn from older runs: the baseline, the start of the current
        streak and the last success are known, and there are enough samples for trends."""
        if len(self.samples) < max(2, need_samples):
            return False
        statuses = [s.status for s in self.samples]
        streak_ended = any(st != statuses[0] for st in statuses)
        return streak_ended and any(st in PASSING for st in statuses)

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
    need_samples: int = 0,
) -> dict[str, JobHistory]:
    """Each job's history: its result in this run, then in each earlier run that had it."""
    histories = {r["job_id"]: JobHistory([Sample(run_id, started_at, r)]) for r in results}
    earlier = store.runs_before(run_id, window)
    for i in range(0, len(earlier), CHUNK):
        pending = sorted(jid for jid, h in histories.items() if not h.settled(need_samples))
        if not pending:
            break
        chunk = earlier[i : i + CHUNK]
        found = store.results_of([rid for rid, _ in chunk], pending)
        for rid, ts in chunk:
            for jid, result in found[rid].items():
                histories[jid].samples.append(Sample(rid, ts, result))
    return histories
