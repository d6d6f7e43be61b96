"""What a run cost and whether it saw everything: computed from the jobs' own records, never sampled.

- busy device-seconds per device type and per worker: finished_at - started_at of every execution
  a worker recorded (the final results, the earlier runs of a rerun job, late attempts);
- idle seconds of the workers live during the run: their slots (Celery concurrency) times the
  part of the run they were there for, less their busy time;
- queue wait per job: started_at - sent_at (the job message carries sent_at), p50/p90/max per queue;
- time to first result: from the run's start to the first result a worker wrote;
- an estimated cost, given a price per device-hour per device type (`--price cuda=2.5,cpu=0.1`):
  of the busy time, and of the time held (busy + idle);
- completeness: how many of the jobs asked for have a final result, and why each other one has
  none (no worker for its device, expired in the queue, lost while a worker held it, pending);
- black holes: a worker that received jobs and finished none while others finished theirs, or
  whose jobs keep dying (the worker side of it: fleet.store.ledger).

account() is a pure function of those records (tests check it against the results' own
timestamps); collect() reads them from the store.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from fleet import records
from fleet.devices import Device
from fleet.errors import BadInput, ErrorKind
from fleet.numbers import finite
from fleet.protocol import Result, Status
from fleet.store import ResultStore
from orchestrator import runs

# Upper bounds (s) of the queue-wait histogram's buckets (Prometheus `le`): seconds to a day; a
# GPU queue above 7 hours is an incident worth its own bucket.
WAIT_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 25200.0, 86400.0)
BLACK_HOLE_DIED = 2  # jobs that died in a worker's hands, at least as many as it finished: named


def parse_prices(text: str | None) -> dict[str, float]:
    """`cuda=2.5,cpu=0.1` -> {"cuda": 2.5, "cpu": 0.1} (price per device-hour); "" or None: {}."""
    prices: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        kind, sep, value = part.partition("=")
        kind = kind.strip()
        try:
            price = float(value) if sep else math.nan
        except ValueError:
            price = math.nan
        if kind not in ("cpu", "cuda") or not math.isfinite(price) or price < 0:
            raise BadInput(
                f"--price: {part.strip()!r} is not DEVICE=PRICE with DEVICE cpu or cuda and a price per "
                "device-hour >= 0 (e.g. --price cuda=2.5,cpu=0.1)"
            )
        prices[kind] = price
    return prices


def device_type(device: Any) -> str:
    return str(device).split(":", 1)[0] if isinstance(device, str) else "unknown"


def queue_of(device: Any) -> str:
    try:
        return Device.parse(str(device)).queue
    except (BadInput, ValueError):
        return "unknown"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None when there are none)."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def histogram(values: list[float]) -> list[list[float | str]]:
    """Cumulative counts per WAIT_BUCKETS bound of sorted values: [[le, count], ...], and
    ["+Inf", all] last: Prometheus' spelling, as a string (strict JSON has no infinity)."""
    out: list[list[float | str]] = []
    i = 0
    for bound in WAIT_BUCKETS:
        while i < len(values) and values[i] <= bound:
            i += 1
        out.append([bound, i])
    out.append(["+Inf", len(values)])
    return out


def _number(value: Any) -> float | None:
    return finite(value)


def executions(
    results: list[Result], late: list[Result], window: tuple[float, float], late_until: float
) -> list[dict[str, Any]]:
    """Every stretch of time a worker spent on a job: (worker, device, start, end), clipped to the
    run's window (a late attempt's up to late_until: it ran after the run's end) -- a time from
    another clock, or a forged one, never counts beyond the run."""
    out: list[dict[str, Any]] = []

    def add(worker: Any, device: Any, started: float | None, finished: float | None, until: float) -> None:
        if isinstance(worker, str) and worker and started is not None and finished is not None:
            s, f = max(started, window[0]), min(finished, until)
            if f >= s:
                out.append({"worker": worker, "device": device, "start": s, "end": f})

    for r, until in [*((r, window[1]) for r in results), *((r, late_until) for r in late)]:
        started, finished = _number(r.get("started_at")), _number(r.get("finished_at"))
        add(r.get("worker"), r.get("device"), started, finished, until)
        reruns = r.get("reruns")
        for earlier in reruns if isinstance(reruns, list) else []:  # the runs before the one that made the result
            if not isinstance(earlier, dict):
                continue
            s = _number(earlier.get("started_at"))
            if s != started:
                add(earlier.get("worker"), r.get("device"), s, _number(earlier.get("finished_at")), until)
    return out


def account(
    meta: dict[str, Any],
    results: list[Result],
    total: int,
    over: bool,
    *,
    late: list[Result] | None = None,
    attempts: dict[str, int] | None = None,
    holders: dict[str, str] | None = None,
    ledger: dict[str, dict[str, int]] | None = None,
    workers_now: list[dict[str, Any]] | None = None,
    prices: dict[str, float] | None = None,
    now: float | None = None,
    job_ids: set[str] | None = None,
) -> dict[str, Any]:
    """The run's accounting (see the module's docstring). results: the run's results as the
    report shows them (a run past its deadline with its LOST and SKIPPED); total: jobs asked for;
    job_ids: the run's jobs, when known: a result for any other job (stray) counts for none."""
    now = time.time() if now is None else now
    attempts, holders, ledger, prices = attempts or {}, holders or {}, ledger or {}, prices or {}
    start = float(meta["started_at"])
    finished_at = _number(meta.get("finished_at"))
    end = finished_at if finished_at is not None else min(now, float(meta.get("deadline") or now)) if over else now
    runs_ = executions(results, late or [], (start, max(start, end)), max(start, end, now))

    # -- workers: who was there, with how many slots, busy how long -----------------------------
    # heartbeats typed and in range (a malformed field: unknown; an entry without a name: none)
    listed = meta.get("workers_at_submit")
    submitted = [h for w in (listed if isinstance(listed, list) else []) if (h := records.decode_heartbeat(w))]
    info: dict[str, dict[str, Any]] = {}
    for w in [*submitted, *(h for w in workers_now or [] if (h := records.decode_heartbeat(w)))]:
        info.setdefault(w["name"], w)
    at_submit = {w["name"] for w in submitted}
    busy: dict[str, float] = defaultdict(float)
    first: dict[str, float] = {}
    types: dict[str, set[str]] = defaultdict(set)
    for e in runs_:
        busy[e["worker"]] += e["end"] - e["start"]
        first[e["worker"]] = min(first.get(e["worker"], e["start"]), e["start"])
        types[e["worker"]].add(device_type(e["device"]))
    final_by: dict[str, int] = defaultdict(int)
    for r in results:
        if r.get("worker"):
            final_by[str(r["worker"])] += 1
    names = sorted(n for n in set(busy) | at_submit | set(ledger) if isinstance(n, str))
    answered = {r["job_id"] for r in results}
    workers: list[dict[str, Any]] = []
    for name in names:
        w = info.get(name, {})
        slots = w.get("concurrency") or 1  # at most records.MAX_SLOTS
        kinds = types.get(name) or {device_type(d) for d in w.get("devices") or []} or {"unknown"}
        there_from = start if name in at_submit else first.get(name, end)
        held = max(0.0, end - max(start, there_from)) * slots
        counts, wrote = ledger.get(name, {}), final_by[name]
        # the results it wrote are the floor of what it took and finished, whatever its counters
        # say (anyone can HINCRBY them); no counters and no results: unknown
        received = max(counts.get("received") or 0, wrote) if counts else None
        finished = max(counts.get("finished") or 0, wrote) if counts or wrote else None
        in_flight = 0 if over else sum(1 for jid, held_by in holders.items() if held_by == name and jid not in answered)
        workers.append(
            {
                "name": name,
                "device_type": ",".join(sorted(kinds)),
                "slots": slots,
                "busy_s": round(busy.get(name, 0.0), 3),
                "idle_s": round(max(0.0, held - busy.get(name, 0.0)), 3),
                "held_s": round(max(held, busy.get(name, 0.0)), 3),
                "results": wrote,
                "received": received,
                "finished": finished,
                "died": counts.get("died"),
                "duplicates": counts.get("duplicate", 0) if counts else None,  # deliveries of jobs running elsewhere
                "in_flight": in_flight,
            }
        )
    devices: dict[str, dict[str, float]] = defaultdict(lambda: {"busy_s": 0.0, "idle_s": 0.0, "held_s": 0.0})
    for w in workers:
        d = devices[w["device_type"]]
        for k in ("busy_s", "idle_s", "held_s"):
            d[k] += w[k]
    device_rows = []
    for kind, d in sorted(devices.items()):
        row: dict[str, Any] = {"device_type": kind, **{k: round(v, 3) for k, v in d.items()}}
        if kind in prices:
            row["price_per_hour"] = prices[kind]
            row["cost_busy"] = round(d["busy_s"] / 3600 * prices[kind], 4)
            row["cost_held"] = round(d["held_s"] / 3600 * prices[kind], 4)
        device_rows.append(row)

    # -- queue wait, first result ------------------------------------------------------------
    waits: dict[str, list[float]] = defaultdict(list)
    for r in results:
        sent, started = _number(r.get("sent_at")), _number(r.get("started_at"))
        if sent is not None and started is not None and r.get("worker"):
            waits[queue_of(r.get("device"))].append(max(0.0, started - sent))
    queue_wait = []
    for queue, values in sorted(waits.items()):
        values.sort()
        queue_wait.append(
            {
                "queue": queue,
                "jobs": len(values),
                "p50_s": round(percentile(values, 0.5) or 0.0, 3),
                "p90_s": round(percentile(values, 0.9) or 0.0, 3),
                "max_s": round(values[-1], 3),
                "sum_s": round(sum(values), 3),
                "histogram": histogram(values),
            }
        )
    # a time before the run's start is another clock's (or a fixture's): not a first result
    firsts = [f for r in results if r.get("worker") and (f := _number(r.get("finished_at"))) is not None and f >= start]
    costed = [d for d in device_rows if "cost_busy" in d]
    return {
        "window": {"start": start, "end": round(end, 3), "seconds": round(max(0.0, end - start), 3)},
        "time_to_first_result_s": round(min(firsts) - start, 3) if firsts else None,
        "devices": device_rows,
        "workers": workers,
        "queue_wait": queue_wait,
        "prices": prices,
        "cost": {
            "busy": round(sum(d["cost_busy"] for d in costed), 4),
            "held": round(sum(d["cost_held"] for d in costed), 4),
            "unpriced": sorted(d["device_type"] for d in device_rows if "cost_busy" not in d),
        }
        if prices
        else None,
        "completeness": completeness(results, total, over, attempts, holders, job_ids),
        "black_holes": black_holes(workers),
    }


def completeness(
    results: list[Result],
    total: int,
    over: bool,
    attempts: dict[str, int],
    holders: dict[str, str],
    job_ids: set[str] | None = None,
) -> dict[str, Any]:
    """How many of the jobs asked for have a final result; which are missing, and why.
    job_ids: the run's jobs, when known; a result for another job id is stray, counted for none."""
    missing: list[dict[str, Any]] = []
    stray = sorted(r["job_id"] for r in results if job_ids is not None and r["job_id"] not in job_ids)
    results = [r for r in results if job_ids is None or r["job_id"] in job_ids]
    have = 0
    for r in results:
        error: dict[str, Any] = dict(r.get("error") or {})
        jid, status, kind = r["job_id"], r.get("status"), error.get("kind")
        if status == Status.SKIPPED and kind == ErrorKind.NO_WORKER:
            missing.append({"job_id": jid, "why": "no worker", "detail": error.get("message")})
        elif kind == ErrorKind.CORRUPT_RECORD and not r.get("worker"):
            missing.append({"job_id": jid, "why": "corrupt record", "detail": error.get("message")})
        elif status == Status.LOST:
            tried = attempts.get(jid, 0)
            if tried:
                held = holders.get(jid)
                detail = f"taken {tried} time(s)" + (f", last by {held}" if held else "") + ", no result"
                missing.append({"job_id": jid, "why": "lost", "detail": detail, "worker": held})
            else:
                missing.append(
                    {"job_id": jid, "why": "expired", "detail": "never taken from its queue before the deadline"}
                )
        else:
            have += 1
    pending = max(0, total - len(results))
    counts: dict[str, int] = defaultdict(int)
    for m in missing:
        counts[m["why"]] += 1
    if pending:
        counts["pending"] = pending
    return {
        "asked": total,
        "final": have,
        "missing": missing,
        "pending": pending,
        "reasons": dict(sorted(counts.items())),
        "stray": stray,
        "over": over,
        "complete": have == total,
    }


def black_holes(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Workers that took jobs and answered none while others answered, or whose jobs keep dying.
    A job a worker still holds (`in_flight`: of a run not over, or held now) is no evidence yet:
    a long job and a hung one look the same until its time limit."""
    others_finished = {w["name"]: sum((x["finished"] or 0) for x in workers if x is not w) for w in workers}
    out = []
    for w in workers:
        received, finished, died = w["received"] or 0, w["finished"] or 0, w["died"] or 0
        settled = received - int(w.get("in_flight") or 0)
        others = others_finished[w["name"]]
        if settled > 0 and not finished and others:
            why = f"received {received} job(s) and finished none while other workers finished {others}"
        elif died >= BLACK_HOLE_DIED and died >= finished:
            why = f"{died} of its jobs died in its hands (finished {finished})"
        else:
            continue
        out.append({"worker": w["name"], "why": why, "received": received, "finished": finished, "died": died})
    return out


def headline(acc: dict[str, Any] | None) -> str | None:
    """The words an incomplete run's report opens with, or None when every job has a final result."""
    if not acc:
        return None
    c = acc["completeness"]
    if c["complete"]:
        return None
    why = ", ".join(
        f"{n} {reason}{'s' if n != 1 and reason.endswith('record') else ''}" for reason, n in c["reasons"].items()
    )  # 3 corrupt records
    state = "INCOMPLETE" if c["over"] else "INCOMPLETE (still running)"
    return f"{state}: {c['final']} of {c['asked']} jobs have a final result ({why})"


def collect(
    store: ResultStore,
    run_id: str,
    current: runs.RunView,
    prices: dict[str, float] | None = None,
    late: list[Result] | None = None,
) -> dict[str, Any]:
    """account() of a run, with what the store keeps beside its results (late: its late
    attempts, when the caller has read them already)."""
    return account(
        current.meta,
        current.results,
        current.total,
        current.finished,
        late=store.late_results(run_id) if late is None else late,
        attempts=store.attempts(run_id),
        holders=store.ledger.holders(run_id),
        ledger=store.ledger.run_counts(run_id),
        workers_now=store.registry.live_workers(),
        prices=prices,
        job_ids=store.job_ids(run_id),
    )
