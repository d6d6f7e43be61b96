"""The whole architecture matrix through the fleet: every class transformers' task mappings
list (orchestrator --architectures all), one synthetic job each on cpu, through real Redis and
a real Celery worker whose pool processes stay warm (no replacement per job, repeats 1).

Figures: makespan against the ideal (sum of the per-job times the jobs measured / pool
processes), coverage per task, failures by kind and the harness gaps, every miss with whose
fault it is (harness, library, host, unclassed), and the markdown report's size and render
time at this scale.

    python -m bench.architectures [--spec all] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import time

from bench.common import private_fleet, save
from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator import architectures
from orchestrator.report import build, render_markdown
from orchestrator.runs import wait
from orchestrator.submit import submit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spec", default="all", help="all | TASK[,TASK] | CLASS[,CLASS]")
    p.add_argument("--concurrency", type=int, default=2)
    args = p.parse_args()
    listing = architectures.local_listing()
    cat = architectures.catalog(listing, args.spec)
    with private_fleet("architectures") as (server, workers):
        workers.start("w1", concurrency=args.concurrency)
        store = ResultStore(server.url)
        t0 = time.perf_counter()
        run_id = submit(
            store,
            make_app(server.url),
            cat,
            None,
            ["cpu"],
            RunSettings(repeats=1),
            order="catalog",
            extra_meta={"transformers": listing["transformers"], "architectures": args.spec},
        )
        counts = wait(store, run_id, poll_s=0.5)
        makespan = time.perf_counter() - t0
        results = store.results(run_id)
        t1 = time.perf_counter()
        report = build(store, run_id)
        built = time.perf_counter() - t1
        t1 = time.perf_counter()
        text = render_markdown(report)
        rendered = time.perf_counter() - t1
    work = sum(float(r["metrics"].get("job_s") or 0.0) for r in results)
    ideal = work / args.concurrency
    cov = report["architectures"]
    save(
        "architectures",
        {
            "transformers": listing["transformers"],
            "spec": args.spec,
            "classes": len(cat.families),
            "pool_processes": args.concurrency,
            "counts": dict(counts),
            "makespan_s": round(makespan, 1),
            "sum_job_s": round(work, 1),
            "ideal_s": round(ideal, 1),
            "makespan_over_ideal": round(makespan / ideal, 3) if ideal else None,
            "pass_rate": cov["pass_rate"],
            "totals": cov["totals"],
            "by_task": cov["by_task"],
            "top_failures": cov["failures"][:15],
            "top_harness_gaps": cov["harness_gaps"][:15],
            "faults": cov["faults"],
            "misses": cov["misses"],
            "report_md_bytes": len(text.encode()),
            "report_build_s": round(built, 3),
            "report_render_s": round(rendered, 3),
        },
    )


if __name__ == "__main__":
    main()
