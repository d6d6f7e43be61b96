"""Worker memory over consecutive jobs: the pool process's RSS before each job (read by the
job itself) stays bounded, with no upward trend. Real models: the MiniLM weights and the
synthetic T5, alternately, in one reused pool process.

    python -m bench.memory [--jobs 300]
"""

from __future__ import annotations

import argparse
import statistics

from bench.common import private_fleet, save
from fleet.broker import make_app
from fleet.catalog import Catalog, load_catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.runs import wait
from orchestrator.submit import submit


def slope(ys: list[float]) -> float:
    xs = list(range(len(ys)))
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=300)
    args = p.parse_args()
    shipped = load_catalog()
    rss: list[float] = []
    with private_fleet("memory") as (server, workers):
        workers.start("mem", concurrency=1)
        store, app = ResultStore(server.url), make_app(server.url)
        for i in range(args.jobs):
            fam = shipped.families["minilm" if i % 2 == 0 else "t5"]
            run_id = submit(store, app, Catalog("bench", {fam.name: fam}), None, ["cpu"], RunSettings(repeats=2))
            wait(store, run_id, poll_s=0.01)
            (result,) = store.results(run_id)
            assert result["status"] in ("REAL", "SYNTHETIC"), result["error"]
            rss.append(result["metrics"]["rss_before_mb"])
    tail = rss[len(rss) // 3 :]  # after the warm-up third
    save(
        "memory",
        {
            "jobs": args.jobs,
            "rss_before_first_job_mb": rss[0],
            "rss_max_mb": max(rss),
            "rss_last_mb": rss[-1],
            "rss_tail_min_mb": min(tail),
            "rss_tail_max_mb": max(tail),
            "tail_slope_mb_per_job": round(slope(tail), 4),
            "tail_growth_over_tail_mb": round(slope(tail) * len(tail), 2),
            "samples_every_30": rss[::30],
        },
    )


if __name__ == "__main__":
    main()
