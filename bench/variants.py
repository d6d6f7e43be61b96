"""What capability variants cost, through the fleet: the same architecture jobs (synthetic, cpu)
run twice on one warm worker, without variants and with `--variants` (default
bf16,fp16,sdpa,flex), and the makespan ratio; the capability table of the second run (per
variant: works / mismatch / error / n.a., claims broken, works unclaimed). With --opt-in, a
third run measures compile and export apart (their cost per class).

The subset is every Nth class of `--architectures all` (sorted by task and class), so that
every task is in it: a sample, not the whole matrix, on a shared 2-core machine.

    python -m bench.variants [--classes 100] [--variants bf16,fp16,sdpa,flex] [--opt-in 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from bench.common import private_fleet, save
from fleet.broker import make_app
from fleet.catalog import Catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator import architectures
from orchestrator.report import build
from orchestrator.runs import wait
from orchestrator.submit import submit


def sample(listing: dict[str, Any], classes: int) -> Catalog:
    rows = architectures.select(listing, "all")
    step = max(1, len(rows) // classes)
    spec = ",".join(r["class"] for r in rows[::step][:classes])
    return architectures.catalog(listing, spec)


def one_run(
    url: str, cat: Catalog, variants: str | None, listing: dict[str, Any], time_limit: float | None = None
) -> tuple[str, float]:
    store = ResultStore(url)
    t0 = time.perf_counter()
    run_id = submit(
        store,
        make_app(url),
        cat,
        None,
        ["cpu"],
        RunSettings(repeats=1, variants=variants, reruns=0, time_limit_s=time_limit),
        order="catalog",
        extra_meta={"transformers": listing["transformers"], "architectures": "sample"},
    )
    wait(store, run_id, poll_s=0.5)
    return run_id, time.perf_counter() - t0


def table(report: dict[str, Any]) -> dict[str, Any]:
    cap = report.get("capability") or {}
    cpu = (cap.get("devices") or {}).get("cpu", {})
    return {
        "per_variant": cpu.get("counts", {}),
        "findings": dict(Counter(f["finding"] for f in cap.get("findings", []))),
        "claim_findings": [
            {k: f.get(k) for k in ("finding", "family", "variant", "claim", "detail")}
            for f in cap.get("findings", [])
            if f["finding"] in ("claim_broken", "works_unclaimed")
        ],
    }


def costs(store: ResultStore, run_id: str) -> dict[str, Any]:
    """Per variant: the seconds of its first call (compile_s, export_s) over the classes that ran it."""
    spent: dict[str, list[float]] = {}
    for r in store.results(run_id):
        for v in (r.get("variants") or {}).get("results", []):
            for key in ("compile_s", "export_s"):
                if v.get(key) is not None:
                    spent.setdefault(key, []).append(float(v[key]))
    return {
        k: {"classes": len(v), "mean_s": round(sum(v) / len(v), 2), "max_s": round(max(v), 2)} for k, v in spent.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--variants", default="bf16,fp16,sdpa,flex")
    p.add_argument("--opt-in", type=int, default=10, help="classes for the compile,export run (0: none)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=None, help="per-job limit of the runs with variants")
    p.add_argument("--name", default="variants", help="the results file: bench/results/NAME.json")
    args = p.parse_args()
    listing = architectures.local_listing()
    cat = sample(listing, args.classes)
    figures: dict[str, Any] = {"transformers": listing["transformers"], "classes": len(cat.families)}
    with private_fleet("variants") as (server, workers):
        workers.start("w1", concurrency=args.concurrency)
        store = ResultStore(server.url)
        one_run(server.url, sample(listing, 5), None, listing)  # warm the pool: imports, first builds
        _, base_s = one_run(server.url, cat, None, listing)
        var_id, var_s = one_run(server.url, cat, args.variants, listing, args.time_limit)
        report = build(store, var_id)
        figures.update(
            variants=args.variants,
            makespan_without_s=round(base_s, 1),
            makespan_with_s=round(var_s, 1),
            ratio=round(var_s / base_s, 3),
            capability=table(report),
            first_call_s=_first_calls(store, var_id),
            wall_s=_per_variant(store, var_id, "wall_s"),
            compiled=_compiled(store, var_id),
        )
        if args.opt_in:
            small = sample(listing, args.opt_in)
            _, plain_s = one_run(server.url, small, None, listing)
            opt_id, opt_s = one_run(server.url, small, "compile,export", listing, args.time_limit)
            figures["opt_in"] = {
                "classes": len(small.families),
                "makespan_without_s": round(plain_s, 1),
                "makespan_with_s": round(opt_s, 1),
                "extra_s_per_class": round((opt_s - plain_s) / len(small.families), 2),
                "first_call": costs(store, opt_id),
                "capability": table(build(store, opt_id)),
            }
    save(args.name, figures, command="python -m bench.variants " + " ".join(sys.argv[1:]))


def _first_calls(store: ResultStore, run_id: str) -> dict[str, Any]:
    """Per variant: mean seconds of its first call (compilation included, e.g. flex's)."""
    return _per_variant(store, run_id, "first_call_s")


def _per_variant(store: ResultStore, run_id: str, key: str) -> dict[str, Any]:
    """Per variant: the mean of a figure of its results (first_call_s, wall_s) over the classes."""
    spent: dict[str, list[float]] = {}
    for r in store.results(run_id):
        for v in (r.get("variants") or {}).get("results", []):
            if v.get(key) is not None:
                spent.setdefault(v["variant"], []).append(float(v[key]))
    return {k: round(sum(v) / len(v), 3) for k, v in spent.items()}


def _compiled(store: ResultStore, run_id: str) -> dict[str, Any]:
    """Per variant that compiles flex_attention: how many classes compiled it (dynamo graphs
    and inductor FX graph cache hits and misses, summed), how many compiled nothing."""
    out: dict[str, dict[str, int]] = {}
    for r in store.results(run_id):
        for v in (r.get("variants") or {}).get("results", []):
            c = v.get("compiled")
            if isinstance(c, dict):
                row = out.setdefault(
                    v["variant"], {"classes": 0, "graphs": 0, "fx_graph_cache_hits": 0, "fx_graph_cache_misses": 0}
                )
                row["classes"] += 1
                for key in ("graphs", "fx_graph_cache_hits", "fx_graph_cache_misses"):
                    row[key] += int(c.get(key) or 0)
    return out


if __name__ == "__main__":
    main()
