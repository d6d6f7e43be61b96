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
`rebuild` derives everything again from the runs Redis still keeps. A corrupt record is treated as
absent (the report reads the earlier runs) and a corrupt meta leaves the summaries unused and
unfolded until a rebuild (fleet.records' rule: corrupt data is never guessed at).

A record: {"k": [strings], "s": [[seq, status, error kind, device index, weights index,
metric...], ...]}, newest first; indexes point into "k"; the weights index and metrics are present
for passing outcomes with a weights key only (trends compare nothing else); "since": the fold a
record was started again at (it was corrupt), while the summaries keep older folds. The meta:
{"seq": the last fold's number, "runs": [[seq, run id, started at], ...] the last KEEP folds}.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from itertools import zip_longest
from typing import Any, NamedTuple, cast

from fleet.errors import RedisOutOfMemory, RedisUnreachable, StoreCorrupt
from fleet.protocol import PASSED, STATUSES, Result
from fleet.store import ResultStore
from orchestrator.baselines import WINDOW_RUNS, JobHistory, Sample, iso
from orchestrator.trends import TREND_METRICS, weights_key

KEEP = WINDOW_RUNS + 1  # the report of the newest folded run still has its whole window
# seq, status, error kind, device, weights key, trend metrics
Row = tuple[int, str, str | None, str, str | None, list[Any]]
REBUILD = "`orchestrator history --rebuild-summaries` derives them again"
logger = logging.getLogger("orchestrator.summaries")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _encode(samples: list[Row], since: int | None = None) -> dict[str, Any]:
    strings: dict[str, int] = {}

    def index(text: str) -> int:
        return strings.setdefault(text, len(strings))

    out = []
    for seq, status, kind, device, key, metrics in samples:
        row: list[Any] = [seq, status, kind, index(device)]
        if key is not None:
            row += [index(key), *metrics]
        out.append(row)
    record: dict[str, Any] = {"k": list(strings), "s": out}
    if since is not None:  # it holds no outcome of the folds before this one (it was corrupt then)
        record["since"] = since
    return record


def _started_again(since: Any, seq: int) -> bool:
    """Whether a record marked since that fold still lacks outcomes the summaries keep."""
    return _is_int(since) and bool(since > seq - KEEP)


_STATUSES = frozenset(STATUSES)
_PASSING = frozenset(str(s) for s in PASSED)
_INT = frozenset((int,))
_TEXT = frozenset((str,))
_KIND = frozenset((str, type(None)))
_KEY = frozenset((int, type(None)))
_METRIC = frozenset((int, float, type(None)))


class Columns(NamedTuple):
    """A record's outcomes as columns, newest first: what _columns gives once it is checked."""

    k: list[str]  # the strings the device and weights indexes point to
    rows: list[list[Any]]  # the stored rows, each [seq, status, kind, device, (key, metric...)]
    seq: tuple[int, ...]
    status: tuple[str, ...]


_EMPTY = Columns([], [], (), ())


def _finite(values: list[Any]) -> bool:
    """Whether these numbers (and Nones) are all finite: their sum is, unless it overflows (then
    one by one)."""
    numbers = [v for v in values if v is not None]
    try:
        total = sum(numbers)
        if total - total == 0:
            return True
    except OverflowError:  # an integer too large for a float
        pass
    return all(v - v == 0 for v in numbers)  # v - v: nan for inf and nan


def _columns(record: dict[str, Any] | None) -> Columns | None:
    """A record's outcomes, checked; an empty Columns without a record, None when it is corrupt
    (fleet.records' rule: never guessed at). The rows are checked column by column (zip_longest:
    a short row's missing columns are None) with exact type checks in C, not value by value: a
    report decodes 10,000 records of 31 outcomes."""
    if not record:
        return _EMPTY
    k, rows = record.get("k"), record.get("s")
    if type(k) is not list or type(rows) is not list or not set(map(type, k)) <= _TEXT:
        return None
    if not rows:
        return Columns(k, rows, (), ())
    if set(map(type, rows)) != {list}:
        return None
    lengths = list(map(len, rows))
    if min(lengths) < 4 or 5 in lengths:
        return None
    seq, status, kind, device, *rest = zip_longest(*rows)
    n = len(k)
    if not set(map(type, seq)) <= _INT or not set(map(type, status)) <= _TEXT or not set(status) <= _STATUSES:
        return None
    if not set(map(type, kind)) <= _KIND or not set(map(type, device)) <= _INT or min(device) < 0 or max(device) >= n:
        return None
    if rest:
        key, metrics = rest[0], rest[1:]
        keys = [i for i in key if i is not None]
        # a row of 4 has no key (None here); a longer one must have one
        if not set(map(type, key)) <= _KEY or len(keys) != len(rows) - lengths.count(4):
            return None
        if min(keys) < 0 or max(keys) >= n:
            return None
        for column in metrics:
            if not set(map(type, column)) <= _METRIC or not _finite(list(column)):
                return None
    return Columns(k, rows, seq, status)


def _decode(record: dict[str, Any] | None) -> list[Row] | None:
    """A record's outcomes as rows, newest first; [] without a record, None when it is corrupt."""
    columns = _columns(record)
    if columns is None:
        return None
    k = columns.k
    return [(r[0], r[1], r[2], k[r[3]], k[r[4]] if len(r) > 4 else None, r[5:]) for r in columns.rows]


def _meta(store: ResultStore) -> dict[str, Any] | None:
    """The summaries' meta ({} before the first fold), or None when it is corrupt: then the
    summaries are not used (reports read the earlier runs) nor folded into, until a rebuild."""
    meta = store.summaries.meta()
    if not meta:
        return {}
    seq, runs = meta.get("seq"), meta.get("runs")
    ok = (
        _is_int(seq)
        and isinstance(runs, list)
        and all(
            isinstance(r, list) and len(r) == 3 and _is_int(r[0]) and isinstance(r[1], str) and _is_number(r[2])
            for r in runs
        )
    )
    if not ok:
        logger.warning("the per-job summaries' meta is corrupt: summaries not used; %s", REBUILD)
        return None
    return meta


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
    meta = _meta(store)
    if meta is None:
        raise StoreCorrupt(f"the per-job summaries' meta is corrupt: {REBUILD}")
    seq = int(meta.get("seq", 0)) + 1
    results = store.results(run_id)
    current = store.summaries.records([r["job_id"] for r in results])
    changed = {}
    for r in results:
        # an outcome numbered seq or later is from a fold that stopped before its meta was written
        # a corrupt record is started again, marked as holding nothing older than this fold
        rows = _decode(current.get(r["job_id"]))
        kept = [s for s in rows or [] if seq - KEEP < s[0] < seq]
        since = current.get(r["job_id"], {}).get("since") if rows is not None else seq
        changed[r["job_id"]] = _encode([outcome(seq, r), *kept], since if _started_again(since, seq) else None)
    runs = [row for row in meta.get("runs", []) if row[0] > seq - KEEP] + [[seq, run_id, started_at]]
    counts = {
        "done": len(results),
        "total": store.job_count(run_id),
        "counts": dict(Counter(str(r["status"]) for r in results)),
    }
    store.summaries.write(changed, {"seq": seq, "runs": runs}, (run_id, counts))


def catch_up(store: ResultStore) -> int:
    """Fold every finished run not folded yet, oldest first, up to the first unfinished one.
    Returns how many were folded (0 when another process is folding). Folding never stops the
    caller: a Redis out of memory or a summary key of another type stops it quietly, corrupt
    summaries (or any other failure) with a warning; reports then read the earlier runs themselves,
    and the summaries wait for a rebuild."""
    with store.summaries.lock() as held:
        if not held:
            return 0
        meta = _meta(store)
        if meta is None:
            return 0
        folded_runs = meta.get("runs", [])
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
            except RedisUnreachable:
                raise
            except Exception as exc:  # derived data never fails the caller
                logger.warning("folding run %s into the summaries failed (%r): %s", rid, exc, REBUILD)
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
    meta = _meta(store)
    if meta is None:
        return None
    table = {row[1]: row[0] for row in meta.get("runs", [])}
    earlier = store.runs_before(run_id, window)
    if any(rid not in table for rid, _ in earlier):
        return None
    wanted = {table[rid]: (rid, ts) for rid, ts in earlier}
    oldest = min(wanted) if wanted else None
    found = store.summaries.records([r["job_id"] for r in results])
    out: dict[str, JobHistory] = {}
    for r in results:
        jid = r["job_id"]
        record = found.get(jid)
        columns = _columns(record)
        since = record.get("since") if record else None
        if columns is None or (oldest is not None and _is_int(since) and since > oldest):
            return None  # a corrupt record (or one started again since): the earlier runs are read
        out[jid] = KeptHistory(Sample(run_id, started_at, r), jid, columns, wanted)
    return out


class KeptHistory(JobHistory):
    """A job's history from its summary record: the current sample, then the record's outcomes
    in the window, answered from the record's columns (an object per outcome only when asked
    for: samples, baseline)."""

    def __init__(self, current: Sample, job_id: str, columns: Columns, wanted: dict[int, tuple[str, float]]) -> None:
        self._current, self._job_id, self._columns = current, job_id, columns
        # the record's outcomes in the window, newest first (the run reported is not among them)
        self._picked = [i for i, seq in enumerate(columns.seq) if seq in wanted]
        self._runs = [wanted[columns.seq[i]] for i in self._picked]
        self._samples: list[Sample] | None = None
        self._baseline: Sample | None = self._kept(0) if self._picked else None

    def _kept(self, n: int) -> Kept:
        """The n-th earlier outcome as a sample."""
        row, k = self._columns.rows[self._picked[n]], self._columns.k
        decoded: Row = (row[0], row[1], row[2], k[row[3]], k[row[4]] if len(row) > 4 else None, row[5:])
        return Kept(self._job_id, *self._runs[n], decoded)

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = [self._current, *(self._kept(n) for n in range(len(self._picked)))]
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value

    @property
    def current(self) -> Sample:
        return self._current

    @property
    def baseline(self) -> Sample | None:
        return self._baseline

    def statuses(self) -> list[str]:
        status = self._columns.status
        return [self._current.status, *(status[i] for i in self._picked)]

    def ref(self, i: int) -> dict[str, Any]:
        if i == 0:
            return self._current.ref()
        rid, ts = self._runs[i - 1]
        return {"run_id": rid, "date": iso(ts), "status": self._columns.status[self._picked[i - 1]]}

    def outcomes(self, limit: int | None = None) -> list[tuple[str, str]]:
        status, earlier = self._columns.status, None if limit is None else max(limit - 1, 0)
        return [(self._current.run_id, self._current.status)][:limit] + [
            (rid, status[i]) for (rid, _), i in zip(self._runs[:earlier], self._picked[:earlier], strict=True)
        ]

    def trend_values(
        self,
        key: str,
        device: str,
        metrics: tuple[str, ...],
        key_of: Callable[[Sample], str | None],
        enough: int | None = None,
    ) -> list[list[Any]]:
        current = self._current
        out: list[list[Any]] = []
        if current.status in _PASSING and key_of(current) == key and current.result["device"] == device:
            out.append([current.result["metrics"].get(m) for m in metrics])
        k, rows = self._columns.k, self._columns.rows
        # where each metric sits in a row (a row keeps TREND_METRICS from its sixth column)
        at = [5 + TREND_METRICS.index(m) for m in metrics]
        # the indexes that name this key and this device (compared as numbers, row by row)
        keys = {i for i, text in enumerate(k) if text == key}
        devices = {i for i, text in enumerate(k) if text == device}
        # a row's values are numbers or None (_columns): enough rows without a None hold the
        # newest `enough` numbers of every metric
        complete = sum(None not in values for values in out)
        for i in self._picked:
            if enough is not None and complete >= enough:
                break
            row = rows[i]
            if len(row) > 4 and row[4] in keys and row[3] in devices and row[1] in _PASSING:
                values = [row[j] if j < len(row) else None for j in at]
                out.append(values)
                complete += None not in values
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
