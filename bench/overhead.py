"""Framework overhead: N no-op jobs through the whole pipeline (submit -> worker -> store)
against N raw Celery no-op tasks, same Redis, same settings, same run. Target: <= 1.3x.

    python -m bench.overhead [--jobs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from bench.common import ROOT, catalog, private_fleet, save
from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.submit import submit

CELERY = [sys.executable, "-m", "celery"]


def raw_round(url: str, n: int, spin_s: float = 0.0) -> float:
    from bench.raw_app import DoneCounter, app

    done = DoneCounter(url)
    done.reset()
    t0 = time.perf_counter()
    # Celery's own fastest way: kombu's publish batches, no result subscription.
    with app.producer_or_acquire() as producer, producer.batch(max_size=200):
        for i in range(n):
            if spin_s:
                app.send_task("bench.spin", args=[i, spin_s], queue="raw", producer=producer, ignore_result=True)
            else:
                app.send_task("bench.noop", args=[i], queue="raw", producer=producer, ignore_result=True)
    while done.count() < n:
        time.sleep(0.005)
    return time.perf_counter() - t0


def fleet_round(url: str, n: int, spin_ms: int = 0) -> float:
    store = ResultStore(url)
    cat = (
        catalog("spin", [f"s{i}_{spin_ms}ms" for i in range(n)])
        if spin_ms
        else catalog("noop", [f"noop{i}" for i in range(n)])
    )
    t0 = time.perf_counter()
    run_id = submit(store, make_app(url), cat, None, ["cpu"], RunSettings(repeats=1), order="catalog")
    while store.result_count(run_id) < n:
        time.sleep(0.005)
    took = time.perf_counter() - t0
    statuses = {r["status"] for r in store.results(run_id)}
    assert statuses == {"SYNTHETIC"}, statuses
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--spin-ms", type=int, default=20, help="work per job in the second comparison")
    args = p.parse_args()
    with private_fleet("overhead") as (server, workers):
        os.environ["FLEET_REDIS_URL"] = server.url  # bench.raw_app reads it at import
        raw = subprocess.Popen(
            [
                *CELERY,
                "-A",
                "bench.raw_app",
                "worker",
                "-Q",
                "raw",
                "-c",
                "1",
                "-P",
                "prefork",
                "--loglevel",
                "WARNING",
                # as fleet-worker starts its workers (fleet.launcher): with gossip on, this worker
                # would also take in every event the fleet's worker sends, during the fleet's rounds
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            workers.start("bench", concurrency=1)
            raw_round(server.url, 20)  # warm both
            fleet_round(server.url, 20)
            raws, fleets, raw_spin, fleet_spin = [], [], [], []
            for _ in range(args.rounds):
                raws.append(raw_round(server.url, args.jobs))
                fleets.append(fleet_round(server.url, args.jobs))
                raw_spin.append(raw_round(server.url, args.jobs // 3, spin_s=args.spin_ms / 1000))
                fleet_spin.append(fleet_round(server.url, args.jobs // 3, spin_ms=args.spin_ms))
        finally:
            raw.terminate()
            raw.wait(20)
    raw_s, fleet_s = min(raws), min(fleets)
    save(
        "overhead",
        {
            "jobs": args.jobs,
            "raw_celery_s": round(raw_s, 3),
            "fleet_s": round(fleet_s, 3),
            "raw_ms_per_task": round(1000 * raw_s / args.jobs, 2),
            "fleet_ms_per_job": round(1000 * fleet_s / args.jobs, 2),
            "ratio": round(fleet_s / raw_s, 3),
            "target_ratio": 1.3,
            "with_work": {
                "work_ms_per_job": args.spin_ms,
                "jobs": args.jobs // 3,
                "raw_celery_s": round(min(raw_spin), 3),
                "fleet_s": round(min(fleet_spin), 3),
                "ratio": round(min(fleet_spin) / min(raw_spin), 3),
            },
            "round_ratios": [round(f / r, 3) for f, r in zip(fleets, raws, strict=True)],
            "load_average_1min": round(os.getloadavg()[0], 2),
            "rounds_raw_s": [round(x, 3) for x in raws],
            "rounds_fleet_s": [round(x, 3) for x in fleets],
        },
    )


if __name__ == "__main__":
    main()
