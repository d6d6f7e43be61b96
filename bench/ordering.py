"""Unequal work: one long check and many short ones on two worker processes, submitted in
catalog order (long last) and longest-first (durations from the previous run, the default
of `orchestrator submit`).

    python -m bench.ordering [--short 12] [--short-ms 250] [--long-ms 3000]
"""

from __future__ import annotations

import argparse
import time

from bench.common import catalog, private_fleet, save
from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.runs import wait
from orchestrator.submit import submit


def run(url: str, names: list[str], order: str) -> tuple[float, float]:
    """(makespan, ideal): the ideal from the durations the jobs measured themselves."""
    store = ResultStore(url)
    t0 = time.perf_counter()
    run_id = submit(store, make_app(url), catalog("spin", names), None, ["cpu"], RunSettings(repeats=1), order=order)
    counts = wait(store, run_id, poll_s=0.02)
    took = time.perf_counter() - t0
    assert counts == {"SYNTHETIC": len(names)}, counts
    durations = [r["metrics"]["job_s"] for r in store.results(run_id)]
    return took, max(max(durations), sum(durations) / 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--short", type=int, default=12)
    p.add_argument("--short-ms", type=int, default=250)
    p.add_argument("--long-ms", type=int, default=3000)
    args = p.parse_args()
    names = [f"short{i}_{args.short_ms}ms" for i in range(args.short)] + [f"long0_{args.long_ms}ms"]
    with private_fleet("ordering") as (server, workers):
        workers.start("w", concurrency=2)
        run(server.url, names[:2], "catalog")  # warm both pool processes
        catalog_s, _ = run(server.url, names, "catalog")  # also the "previous run" for durations
        longest_s, ideal_s = run(server.url, names, "longest-first")
        catalog_again_s, _ = run(server.url, names, "catalog")
    save(
        "ordering",
        {
            "workers": 2,
            "short_jobs": args.short,
            "short_ms": args.short_ms,
            "long_ms": args.long_ms,
            "ideal_s": round(ideal_s, 3),
            "catalog_order_s": round(min(catalog_s, catalog_again_s), 3),
            "longest_first_s": round(longest_s, 3),
            "speedup": round(min(catalog_s, catalog_again_s) / longest_s, 3),
        },
    )


if __name__ == "__main__":
    main()
