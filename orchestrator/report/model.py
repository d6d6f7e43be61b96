"""The report model: one run's results with their baseline, history and cross-device agreement,
as plain data that every renderer (markdown, JSON, JUnit) reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from fleet import records
from fleet.collector import collector_paused
from fleet.protocol import Job, Result, Status, change
from fleet.store import ResultStore
from orchestrator import accounting, attribution, baselines, runs, summaries, trends
from orchestrator.expectations import Expectations
from orchestrator.report import capability, coverage

# "harness": the harness could not build or feed the model on one side: never a regression
CHANGE_ORDER = {"regressed": 0, "new": 1, "improved": 2, "unchanged": 3, "harness": 4}
AGREEMENT_ATOL = 1e-3
HISTORY_RUNS = 10


def build(
    store: ResultStore,
    run_id: str,
    history_runs: int = HISTORY_RUNS,
    expectations: Expectations | None = None,
    trend: trends.TrendSettings | None = None,
    window: int = baselines.WINDOW_RUNS,
    prices: dict[str, float] | None = None,
    full_read: bool = False,
    unreadable: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report model. Each row's baseline is the newest earlier run that had the same job
    (orchestrator.baselines), not simply the run before. Earlier runs come from the per-job
    summaries (orchestrator.summaries); full_read (or summaries that do not cover the window)
    reads every earlier run instead, with the same outcome. prices: per device-hour, for the
    accounting's estimated cost (orchestrator.accounting).

    The cyclic garbage collector is paused meanwhile: the model is some hundred thousand
    objects from JSON and no cycles, and each of the collector's full passes walks all of them
    (a fifth of the time at 10,000 results, bench.history_scale).

    unreadable: job id -> why; those results of the run are shown as corrupt records
    (orchestrator.report.render_checked: a result no renderer could show)."""
    with collector_paused():
        return _build(store, run_id, history_runs, expectations, trend, window, prices, full_read, unreadable)


def _build(
    store: ResultStore,
    run_id: str,
    history_runs: int,
    expectations: Expectations | None,
    trend: trends.TrendSettings | None,
    window: int,
    prices: dict[str, float] | None,
    full_read: bool,
    unreadable: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    current = runs.view(store, run_id)  # reading never writes: a run past its deadline is shown as it will end
    if unreadable:
        current.results[:] = [
            records.corrupt_result(run_id, r["job_id"], unreadable[r["job_id"]]) if r["job_id"] in unreadable else r
            for r in current.results
        ]
    meta, results = current.meta, current.results
    trend = trend or trends.TrendSettings()
    previous_id = store.previous_run_id(run_id)
    histories = None
    if not full_read:
        summaries.catch_up(store)
        histories = summaries.histories(store, run_id, meta["started_at"], results, window)
    if histories is None or history_runs > window + 1:
        histories = baselines.collect(store, run_id, meta["started_at"], results, window)
        history = _history(store, run_id, history_runs, {run_id: results})
    else:
        history = _history_of(store, run_id, history_runs, histories)
    baseline_results = {jid: h.baseline.result for jid, h in histories.items() if h.baseline is not None}
    # attribution: the whole baseline result and catalog entries, read only for jobs whose status changed
    changed = {
        jid: base
        for jid, h in histories.items()
        if (base := h.baseline) is not None
        and (now := h.current) is not None
        and row_change(base.result, now.result) in ("regressed", "improved")
    }
    wanted: dict[str, list[str]] = {}
    for jid, b in changed.items():
        wanted.setdefault(b.run_id, []).append(jid)
    full_baselines: dict[str, Result] = {}
    for rid, jids in wanted.items():
        full_baselines.update(store.results_of([rid], jids)[rid])
    specs: dict[tuple[str, str], Job] = {}
    if changed:
        specs.update({(run_id, jid): job for jid, job in store.job_specs(run_id, sorted(changed)).items()})
    for rid, jids in wanted.items():
        specs.update({(rid, jid): job for jid, job in store.job_specs(rid, jids).items()})
    data = assemble(
        meta,
        results,
        previous_id,
        baseline_results,
        history,
        histories=histories,
        expectations=expectations,
        trend=trend,
        specs=specs,
        full_baselines=full_baselines,
    )
    data["late_attempts"] = late = store.late_results(run_id)  # after the run ended or the job was sealed
    data["accounting"] = accounting.collect(store, run_id, current, prices, late)
    data["incomplete"] = accounting.headline(data["accounting"])  # an incomplete run's report opens with it
    return data


def row_change(prev: Result | None, result: Result) -> str:
    """regressed, improved, new, unchanged, or harness (the harness could not build or feed the
    model on one side: never a regression)."""
    if prev is not None and (coverage.is_harness_gap(result) or coverage.is_harness_gap(prev)):
        return "harness"
    return change(str(prev["status"]) if prev else None, str(result["status"]))


def assemble(
    meta: dict[str, Any],
    results: list[Result],
    previous_id: str | None,
    previous: dict[str, Result],
    history: list[tuple[str, dict[str, str]]],
    histories: dict[str, baselines.JobHistory] | None = None,
    expectations: Expectations | None = None,
    trend: trends.TrendSettings | None = None,
    specs: dict[tuple[str, str], Job] | None = None,
    full_baselines: dict[str, Result] | None = None,
) -> dict[str, Any]:
    """previous: each job's baseline result (from a summary: status, error kind and metrics
    only); full_baselines: the whole baseline results where previous holds less, for attribution;
    histories (baselines.collect or orchestrator.summaries) add where the baseline came from, the
    job's status history and metric trends."""
    full_baselines = full_baselines or {}
    histories, specs, trend = histories or {}, specs or {}, trend or trends.TrendSettings()
    rows: list[dict[str, Any]] = []
    metric_regressions: list[dict[str, Any]] = []
    for r in results:
        jid = r["job_id"]
        prev = previous.get(jid)
        h = histories.get(jid)
        prev_status = str(prev["status"]) if prev else None
        if h is not None and h.baseline is not None:
            base: dict[str, Any] | None = h.baseline.ref()
        else:
            base = {"run_id": previous_id, "date": None, "status": prev_status} if prev else None
        row: dict[str, Any] = {
            **r,
            "previous_status": prev_status,
            "baseline": base,
            "change": row_change(prev, r),
            "history": h.summary() if h is not None else None,
        }
        if prev is not None and row["change"] in ("regressed", "improved"):
            base_run = base["run_id"] if base else None
            row["attribution"] = attribution.attribute(
                full_baselines.get(jid, prev), r, specs.get((str(base_run), jid)), specs.get((r["run_id"], jid))
            )
        if h is not None:
            row["trends"] = trends.trends(h, trend)
            for metric, t in row["trends"].items():
                if t["label"] in ("regression", "suspicious"):
                    metric_regressions.append({"job_id": jid, "metric": metric, **t})
        if expectations is not None:
            row["expectation"] = expectations.judge(r)
            row["unexpected"] = row["expectation"]["unexpected"]
        rows.append(row)
    rows.sort(key=lambda r: (not r.get("unexpected"), CHANGE_ORDER[r["change"]], r["family"], r["device"]))
    baseline_runs = {row["job_id"]: (row["baseline"] or {}).get("run_id") for row in rows}
    counts = Counter(r["status"] for r in results)
    versions = sorted(
        {
            (r["environment"].get("torch"), r["environment"].get("transformers"), r["environment"].get("cuda"))
            for r in results
            if r.get("environment")
        },
        key=str,
    )
    env_keys = ("host", "platform", "python", "torch", "transformers", "cuda", "gpu_name", "gpu_memory_mb")
    environments = sorted(
        {tuple(r["environment"].get(k) for k in env_keys) for r in results if r.get("environment")}, key=str
    )
    return {
        "run_id": meta["run_id"],
        "started_at": meta["started_at"],
        "finished_at": meta.get("finished_at"),
        "started_at_iso": baselines.iso(meta["started_at"]),
        "finished_at_iso": baselines.iso(meta.get("finished_at")),
        "deadline": meta.get("deadline"),
        "catalog": meta.get("catalog"),
        "origin": meta.get("origin"),
        "previous_run_id": previous_id,
        "workers": meta.get("workers_at_submit", []),
        "versions": [{"torch": t, "transformers": tr, "cuda": c} for t, tr, c in versions],
        "environments": [dict(zip(env_keys, e, strict=True)) for e in environments],
        "summary": {s.value: counts.get(s.value, 0) for s in Status} | {"total": len(results)},
        "regressions": [r for r in rows if r["change"] == "regressed"],
        "flaky": [r for r in rows if r["status"] == Status.FLAKY],
        "metric_regressions": metric_regressions,
        "trend_settings": {"window": trend.window, "violations": trend.violations, "threshold": trend.threshold},
        "expectations": expectations.source if expectations is not None else None,
        "unexpected": [r for r in rows if r.get("unexpected")],
        "expected": [r for r in rows if expectations is not None and not r.get("unexpected")],
        "rows": rows,
        "agreement": agreement(results),
        "history": history,
        "results": results,
        "late_attempts": [],
        "architectures": coverage.coverage(results),
        "capability": capability.build(results, previous, specs, baseline_runs),
        "transformers": meta.get("transformers"),
        "corrupt_meta": meta.get(records.CORRUPT_KEY),  # the run's meta could not be read (fleet/records.py)
    }


def _history(
    store: ResultStore, run_id: str, limit: int, loaded: dict[str, list[Result]]
) -> list[tuple[str, dict[str, str]]]:
    """Statuses of the last `limit` runs up to run_id, oldest first (reusing results already read)."""
    ids = store.run_ids(1000)
    if run_id in ids:
        ids = ids[ids.index(run_id) :]
    out = []
    for rid in reversed(ids[:limit]):
        results = loaded[rid] if rid in loaded else store.results(rid)
        out.append((rid, {r["job_id"]: str(r["status"]) for r in results}))
    return out


def _history_of(
    store: ResultStore, run_id: str, limit: int, histories: dict[str, baselines.JobHistory]
) -> list[tuple[str, dict[str, str]]]:
    """_history from the jobs' histories: each of the last `limit` runs with the statuses of this
    run's jobs in it (what the report shows), nothing read but the list of runs. A job's outcomes
    are in distinct runs, newest first, the first in run_id: when the strip ends at run_id, only
    a job's newest `limit` outcomes can be in it."""
    ids = store.run_ids(1000)
    newest: int | None = None
    if run_id in ids:
        ids, newest = ids[ids.index(run_id) :], limit
    by_run: dict[str, dict[str, str]] = {rid: {} for rid in ids[:limit]}
    for jid, h in histories.items():
        for rid, status in h.outcomes(newest):
            if rid in by_run:
                by_run[rid][jid] = status
    return [(rid, by_run[rid]) for rid in reversed(ids[:limit])]


def agreement(results: list[Result]) -> list[dict[str, Any]]:
    """Where the same synthetic weights ran on cpu and on cuda, do the outputs agree?"""
    by_family: dict[str, list[Result]] = {}
    for r in results:
        if r["status"] == Status.SYNTHETIC and r.get("output"):
            by_family.setdefault(r["family"], []).append(r)
    out = []
    for family, rs in sorted(by_family.items()):
        cpu = next((r for r in rs if r["device"] == "cpu"), None)
        for other in (r for r in rs if r["device"] != "cpu"):
            if cpu is None or cpu["revision"] != other["revision"]:
                continue
            out.append(
                {
                    "family": family,
                    "devices": f"cpu vs {other['device']}",
                    **compare_outputs(cpu["output"], other["output"]),
                }
            )
    return out


def compare_outputs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    diffs: list[float] = []
    exact = []
    for key in sorted(set(a) & set(b)):
        va, vb = a[key], b[key]
        if isinstance(va, list) and isinstance(vb, list) and va and all(isinstance(x, (int, float)) for x in va + vb):
            if key == "tokens":
                exact.append(va == vb)
            elif len(va) == len(vb):
                diffs.append(max(abs(x - y) for x, y in zip(va, vb, strict=True)))
    max_diff = max(diffs) if diffs else None
    agree = all(exact) and (max_diff is None or max_diff <= AGREEMENT_ATOL)
    return {"agree": agree, "max_abs_diff": max_diff, "tokens_equal": all(exact) if exact else None}
