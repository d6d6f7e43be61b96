"""Per-job summaries: what a report needs of a job's earlier runs, kept in one small record per job.

When a run is finished it is folded into the summaries, once: each of its jobs' records gains
this run's outcome (status, error kind, device, and for a passing outcome its weights key and trend
metrics), and outcomes older than the last KEEP folded runs are dropped. A report then reads the
run itself plus one record per job, never whole earlier runs; `runs` and `status` read the counts
kept for each folded run.

Runs are folded in the order they started, never past a run that is not finished yet (its results
may still change). A report uses the summaries only when they hold every run of its window
(orchestrator.baselines); otherwise (a report of an old run, an earlier run still open, Redis
without summaries yet) it reads the earlier runs as before (baselines.collect), which gives the
same history. Folding is derived data: any process may do it (one at a time, a lock), and
`rebuild` derives everything again from the runs Redis still keeps.

A record: {"k": [strings], "s": [[seq, status, error kind, device index, weights index,
metric...], ...]}, newest first; indexes point into "k"; the weights index and metrics are present
for passing outcomes with a weights key only (trends compare nothing else). The meta:
{"seq": the last fold's number, "runs": [[seq, run id, started at], ...] the last KEEP folds}.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from fleet.errors import RedisOutOfMemory, StoreCorrupt
from fleet.protocol import PASSED, Result
from fleet.store import ResultStore
from orchestrator.baselines import WINDOW_RUNS, JobHistory, Sample
from orchestrator.trends import TREND_METRICS, weights_key

KEEP = WINDOW_RUNS + 1  # the report of the newest folded run still has its whole window
# seq, status, error kind, device, weights key, trend metrics
Row = tuple[int, str, str | None, str, str | None, list[Any]]


def _encode(samples: list[Row]) -> dict[str, Any]:
    strings: dict[str, int] = {}

    def index(text: str) -> int:
        return strings.setdefault(text, len(strings))

    out = []
    for seq, status, kind, device, key, metrics in samples:
        row: list[Any] = [seq, status, kind, index(device)]
        if key is not None:
            row += [index(key), *metrics]
        out.append(row)
    return {"k": list(strings), "s": out}


def _decode(record: dict[str, Any] | None) -> list[Row]:
    if not record:
        return []
    try:
        k = record["k"]
        return [
            (int(row[0]), str(row[1]), row[2], str(k[row[3]]), str(k[row[4]]) if len(row) > 4 else None, row[5:])
            for row in record["s"]
        ]
    except (KeyError, IndexError, TypeError, ValueError):
        return []  # a record that cannot be read is started again


def outcome(seq: int, result: Result) -> Row:
    """What a summary keeps of one result."""
    status = str(result.get("status"))
    error = result.get("error")
    kind = error.get("kind") if isinstance(error, dict) else None
    key = weights_key(result) if status in PASSED else None
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else {}
    values = [metrics.get(m) if isinstance(metrics.get(m), (int, float)) else None for m in TREND_METRICS]
    return seq, status, kind if isinstance(kind, str) else None, str(result.get("device")), key, values


def fold(store: ResultStore, run_id: str, started_at: float) -> None:
    """Add one finished run to the summaries (the caller holds the lock)."""
    meta = store.summaries.meta()
    seq = int(meta.get("seq", 0)) + 1
    results = store.results(run_id)
    current = store.summaries.records([r["job_id"] for r in results])
    changed = {}
    for r in results:
        # an outcome numbered seq or later is from a fold that stopped before its meta was written
        kept = [s for s in _decode(current.get(r["job_id"])) if seq - KEEP < s[0] < seq]
        changed[r["job_id"]] = _encode([outcome(seq, r), *kept])
    runs = [row for row in meta.get("runs", []) if row[0] > seq - KEEP] + [[seq, run_id, started_at]]
    counts = {
        "done": len(results),
        "total": store.job_count(run_id),
        "counts": dict(Counter(str(r["status"]) for r in results)),
    }
    store.summaries.write(changed, {"seq": seq, "runs": runs}, (run_id, counts))


def catch_up(store: ResultStore) -> int:
    """Fold every finished run not folded yet, oldest first, up to the first unfinished one.
    Returns how many were folded (0 when another process is folding). A Redis out of memory or
    a summary key of another type stops the folding, never the caller: reports then read the
    earlier runs themselves."""
    with store.summaries.lock() as held:
        if not held:
            return 0
        folded_runs = store.summaries.meta().get("runs", [])
        order = store.runs_oldest_first()
        position = {rid: i for i, (rid, _) in enumerate(order)}
        done = [position[row[1]] for row in folded_runs if row[1] in position]
        if done:
            pending = order[max(done) + 1 :]
        elif folded_runs:  # every folded run was pruned since: those that started after the last
            pending = [(rid, ts) for rid, ts in order if ts > folded_runs[-1][2]]
        else:
            pending = order
        pending = pending[-KEEP:]  # older ones would be dropped again at once
        folded = 0
        for rid, ts in pending:
            if not store.is_finished(rid):
                break
            try:
                fold(store, rid, ts)
            except (RedisOutOfMemory, StoreCorrupt):  # derived data: reports read the runs instead
                break
            folded += 1
        return folded


def rebuild(store: ResultStore) -> int:
    """Derive the summaries again from the runs Redis keeps (after an upgrade, or to check them)."""
    store.summaries.clear()
    return catch_up(store)


def histories(
    store: ResultStore, run_id: str, started_at: float, results: list[Result], window: int = WINDOW_RUNS
) -> dict[str, JobHistory] | None:
    """Each job's history as baselines.collect gives it, from the summaries; None when they do
    not hold every run of the window."""
    table = {row[1]: int(row[0]) for row in store.summaries.meta().get("runs", [])}
    earlier = store.runs_before(run_id, window)
    if any(rid not in table for rid, _ in earlier):
        return None
    wanted = {table[rid]: (rid, ts) for rid, ts in earlier}
    found = store.summaries.records([r["job_id"] for r in results])
    out = {}
    for r in results:
        jid = r["job_id"]
        h = JobHistory([Sample(run_id, started_at, r)])
        h.samples += [Kept(jid, *wanted[row[0]], row) for row in _decode(found.get(jid)) if row[0] in wanted]
        out[jid] = h
    return out


class Kept(Sample):
    """A sample from a summary: its status at hand, its (partial) result made when read."""

    def __init__(self, job_id: str, run_id: str, started_at: float, row: Row) -> None:
        self.run_id, self.started_at, self.key = run_id, started_at, row[4]
        self._job_id, self._row = job_id, row
        self._result: Result | None = None

    @property
    def status(self) -> str:
        return self._row[1]

    @property
    def result(self) -> Result:
        if self._result is None:
            _, status, kind, device, _, values = self._row
            self._result = cast(
                Result,
                {
                    "job_id": self._job_id,
                    "run_id": self.run_id,
                    "status": status,
                    "device": device,
                    "error": {"kind": kind} if kind else None,
                    "metrics": {m: v for m, v in zip(TREND_METRICS, values, strict=False) if v is not None},
                },
            )
        return self._result

    @result.setter
    def result(self, value: Result) -> None:
        self._result = value


def counts(store: ResultStore, run_ids: list[str]) -> dict[str, tuple[int, int, Counter[str]]]:
    """(done, total, counts per status) of each folded run among these."""
    out = {}
    for rid, c in store.summaries.counts(run_ids).items():
        try:
            out[rid] = (int(c["done"]), int(c["total"]), Counter({str(k): int(v) for k, v in c["counts"].items()}))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return out
