"""The cost of a job's first store call in the worker (fleet.store.ResultStore.begin_delivery with
the ledger's record, and since the job lease also taking the lease, in fleet/store/begin.lua):
N first deliveries of N jobs, each timed, against the Redis given. Run it from two checkouts
against one Redis, alternating, to compare the script before and after a change.

    python -m bench.begin_cost --url redis://127.0.0.1:PORT/0 [--jobs 2000] [--name begin_cost]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from bench.common import save
from fleet.store import ResultStore
from fleet.store.ledger import Taker


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--name", default="begin_cost")
    args = p.parse_args()
    store = ResultStore(args.url)
    run_id = f"bench-begin-{os.getpid()}"
    jobs: list[Any] = [  # only the fields the store reads
        {"run_id": run_id, "job_id": f"j{i}@cpu", "family": f"j{i}", "device": "cpu", "queue": "cpu"}
        for i in range(args.jobs)
    ]
    store.create_run({"run_id": run_id, "started_at": time.time(), "deadline": 2e9, "deadline_s": 60}, jobs)
    me = Taker("cpu", "cpu@bench", "inst-bench")
    store.begin_delivery(run_id, jobs[0]["job_id"], None, me)  # the script loaded once
    took = []
    for job in jobs[1:]:
        t0 = time.perf_counter()
        store.begin_delivery(run_id, job["job_id"], None, me)
        took.append(time.perf_counter() - t0)
    store.delete_run(run_id)
    took.sort()
    save(
        args.name,
        {
            "jobs": len(took),
            "median_us": round(1e6 * statistics.median(took), 1),
            "p95_us": round(1e6 * took[int(0.95 * len(took))], 1),
            "mean_us": round(1e6 * statistics.fmean(took), 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    )


if __name__ == "__main__":
    main()
