"""The worker's own cost per job: round trip (submit -> result in Redis) minus the time the
job itself reports (job_s), one job at a time through one reused worker process.
Target on a GPU worker: under 50 ms.

    python -m bench.worker_overhead [--device cuda] [--jobs 30] [--family llama]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench.common import private_fleet, save
from fleet.broker import make_app
from fleet.catalog import Catalog, load_catalog
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.submit import submit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--jobs", type=int, default=30)
    p.add_argument("--family", default="llama")
    args = p.parse_args()
    fam = load_catalog().families[args.family]
    cat = Catalog("bench", {fam.name: fam})
    rows = []
    with private_fleet("worker-overhead") as (server, workers):
        workers.start("overhead", devices="cuda" if args.device.startswith("cuda") else "cpu")
        url = server.url
        store, app = ResultStore(url), make_app(url)
        for i in range(args.jobs + 2):
            t0 = time.perf_counter()
            run_id = submit(store, app, cat, None, [args.device], RunSettings(repeats=3), order="catalog")
            while not store.result_count(run_id):
                time.sleep(0.001)
            round_trip = time.perf_counter() - t0
            (result,) = store.results(run_id)
            if i < 2:
                continue  # the first jobs warm the pool process
            m = result["metrics"]
            rows.append(
                {
                    "round_trip_ms": round_trip * 1000,
                    "job_ms": m["job_s"] * 1000,
                    "overhead_ms": round_trip * 1000 - m["job_s"] * 1000,
                    "status": result["status"],
                    "model_device": result["environment"].get("model_device"),
                    "cuda_allocated_after_mb": m.get("cuda_allocated_after_mb"),
                    "cuda_baseline_allocated_mb": m.get("cuda_baseline_allocated_mb"),
                }
            )
    overheads = sorted(r["overhead_ms"] for r in rows)
    save(
        f"worker_overhead_{args.device.replace(':', '')}",
        {
            "device": args.device,
            "family": args.family,
            "jobs": len(rows),
            "statuses": sorted({r["status"] for r in rows}),
            "model_devices": sorted({str(r["model_device"]) for r in rows}),
            "overhead_ms_p50": round(statistics.median(overheads), 2),
            "overhead_ms_p95": round(overheads[int(0.95 * (len(overheads) - 1))], 2),
            "job_ms_p50": round(statistics.median(r["job_ms"] for r in rows), 2),
            "cuda_memory_back_to_baseline": all(
                r["cuda_allocated_after_mb"] is None
                or r["cuda_allocated_after_mb"] <= r["cuda_baseline_allocated_mb"] + 1
                for r in rows
            ),
            "target_overhead_ms": 50,
        },
        command="python -m bench.worker_overhead " + " ".join(sys.argv[1:]),
    )


if __name__ == "__main__":
    main()
