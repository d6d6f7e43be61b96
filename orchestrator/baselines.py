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

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from fleet.protocol import FAILING, PASSED, Result, Status
from fleet.store import ResultStore

WINDOW_RUNS = 30  # how far back (in runs) baselines and history look
CHUNK = 10  # earlier runs read per round trip
FROM_RESULT: Any = object()  # Sample.key when the result itself tells the weights
PASSING = PASSED


@lru_cache(maxsize=4096)  # a report names the same few run starts 10,000 times over
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
    """A job's outcomes in the current run and the earlier runs that had it, newest first.

    What the report reads goes through current, baseline, statuses(), ref(), outcomes() and
    trend_values(): a history kept in a summary record (orchestrator.summaries.KeptHistory)
    answers them from the record without an object per outcome."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def current(self) -> Sample | None:
        """The outcome in the run reported (None: an empty history)."""
        return self.samples[0] if self.samples else None

    @property
    def baseline(self) -> Sample | None:
        return self.samples[1] if len(self.samples) > 1 else None

    def statuses(self) -> list[str]:
        """Each outcome's status, newest first."""
        return [s.status for s in self.samples]

    def ref(self, i: int) -> dict[str, Any]:
        """The i-th outcome (newest first) as the report names it: run, date, status."""
        return self.samples[i].ref()

    def outcomes(self, limit: int | None = None) -> list[tuple[str, str]]:
        """(run id, status) of each outcome (the newest `limit` only, if given), newest first."""
        return [(s.run_id, s.status) for s in self.samples[:limit]]

    def trend_values(
        self,
        key: str,
        device: str,
        metrics: tuple[str, ...],
        key_of: Callable[[Sample], str | None],
        enough: int | None = None,
    ) -> list[list[Any]]:
        """These metrics of each passing outcome (REAL, UNVERIFIED, SYNTHETIC) with this weights key
        (key_of: orchestrator.trends.sample_key) on this device, newest first: one value per
        metric, None where absent. enough: the caller reads no more than the newest `enough`
        numbers of each metric, and older outcomes may be left out once those are in (a summary
        record stops there; this full history lists them all)."""
        return [
            [s.result["metrics"].get(m) for m in metrics]
            for s in self.samples
            if s.status in _PASSING and key_of(s) == key and s.result["device"] == device
        ]

    def summary(self) -> dict[str, Any]:
        """streak_start: the oldest run of the current unbroken streak of this status;
        last_success: the newest REAL or SYNTHETIC outcome (this run included);
        first_failure: the first FAILED, LOST or FLAKY outcome after that success."""
        statuses = self.statuses()
        if not statuses:
            return {"streak_start": None, "first_failure": None, "last_success": None, "runs_seen": 0}
        current = statuses[0]
        streak = 0
        for i in range(1, len(statuses)):
            if statuses[i] != current:
                break
            streak = i
        last_success = next((i for i, s in enumerate(statuses) if s in _PASSING), None)
        first_failure = None
        for i, s in enumerate(statuses):
            if i == last_success:
                break
            if s in _FAILING_OR_FLAKY:
                first_failure = i
        return {
            "streak_start": self.ref(streak),
            "first_failure": self.ref(first_failure) if first_failure is not None else None,
            "last_success": self.ref(last_success) if last_success is not None else None,
            "runs_seen": len(statuses),
        }


_PASSING = frozenset(str(s) for s in PASSING)
_FAILING_OR_FLAKY = frozenset(str(s) for s in (*FAILING, Status.FLAKY))


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
