"""The report model: one run's results with their baseline, history and cross-device agreement,
as plain data that every renderer (markdown, JSON, JUnit) reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fleet.protocol import Result, Status, change
from fleet.store import ResultStore
from orchestrator import runs

CHANGE_ORDER = {"regressed": 0, "new": 1, "improved": 2, "unchanged": 3}
AGREEMENT_ATOL = 1e-3
HISTORY_RUNS = 10


def build(store: ResultStore, run_id: str, history_runs: int = HISTORY_RUNS) -> dict[str, Any]:
    current = runs.view(store, run_id)  # reading never writes: a run past its deadline is shown as it will end
    meta, results = current.meta, current.results
    previous_id = store.previous_run_id(run_id)
    previous_results = store.results(previous_id) if previous_id else []
    loaded = {run_id: results} | ({previous_id: previous_results} if previous_id else {})
    history = _history(store, run_id, history_runs, loaded)
    data = assemble(meta, results, previous_id, {r["job_id"]: r for r in previous_results}, history)
    data["late_attempts"] = store.late_results(run_id)  # after the run ended or the job was sealed
    return data


def assemble(
    meta: dict[str, Any],
    results: list[Result],
    previous_id: str | None,
    previous: dict[str, Result],
    history: list[tuple[str, dict[str, str]]],
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for r in results:
        prev = previous.get(r["job_id"])
        prev_status = str(prev["status"]) if prev else None
        rows.append({**r, "previous_status": prev_status, "change": change(prev_status, str(r["status"]))})
    rows.sort(key=lambda r: (CHANGE_ORDER[r["change"]], r["family"], r["device"]))
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
        "deadline": meta.get("deadline"),
        "catalog": meta.get("catalog"),
        "origin": meta.get("origin"),
        "previous_run_id": previous_id,
        "workers": meta.get("workers_at_submit", []),
        "versions": [{"torch": t, "transformers": tr, "cuda": c} for t, tr, c in versions],
        "environments": [dict(zip(env_keys, e, strict=True)) for e in environments],
        "summary": {s.value: counts.get(s.value, 0) for s in Status} | {"total": len(results)},
        "regressions": [r for r in rows if r["change"] == "regressed"],
        "rows": rows,
        "agreement": agreement(results),
        "history": history,
        "results": results,
        "late_attempts": [],
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
        if isinstance(va, list) and va and all(isinstance(x, (int, float)) for x in va + vb):
            if key == "tokens":
                exact.append(va == vb)
            elif len(va) == len(vb):
                diffs.append(max(abs(x - y) for x, y in zip(va, vb, strict=True)))
    max_diff = max(diffs) if diffs else None
    agree = all(exact) and (max_diff is None or max_diff <= AGREEMENT_ATOL)
    return {"agree": agree, "max_abs_diff": max_diff, "tokens_equal": all(exact) if exact else None}
