"""Soak: 500 jobs through 2 workers, with 5 random worker kills (SIGKILL to the whole worker:
main process and pool) and one Redis restart (AOF on) along the way, with default settings
(visibility timeout 3900 s, derived deadline): the jobs a killed worker held come back through
fleet.redelivery, not the visibility timeout. Must end with exactly 500 results, one per job,
none LOST.

    python -m bench.soak [--jobs 500] [--kills 5] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import threading
import time

from bench.common import catalog, private_fleet, save
from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.runs import wait
from orchestrator.submit import submit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    rng = random.Random(args.seed)
    env = {"BENCH_SPIN_S": "0.05"}  # default visibility timeout: no shortcut
    events: list[str] = []
    with private_fleet("soak") as (server, workers):
        for name in ("a", "b"):
            workers.start(name, concurrency=1, env=env)
        store = ResultStore(server.url)
        t0 = time.perf_counter()
        run_id = submit(
            store,
            make_app(server.url),
            catalog("spin", [f"job{i}" for i in range(args.jobs)]),
            None,
            ["cpu"],
            RunSettings(repeats=1),  # the default, derived deadline
            order="catalog",
        )

        def chaos() -> None:
            restart_at = args.kills // 2
            for k in range(args.kills):
                time.sleep(rng.uniform(2.0, 4.0))
                victim = "ab"[k % 2]  # both workers die along the way
                workers.kill(victim)
                events.append(f"{time.perf_counter() - t0:.1f}s kill {victim}")
                workers.start(victim, concurrency=1, wait=False, env=env)
                if k == restart_at:
                    time.sleep(1.0)
                    server.stop()
                    time.sleep(1.0)
                    server.start()
                    events.append(f"{time.perf_counter() - t0:.1f}s redis restarted")

        chaos_thread = threading.Thread(target=chaos)
        chaos_thread.start()
        counts = wait(store, run_id, poll_s=0.2)
        chaos_thread.join()
        took = time.perf_counter() - t0
        results = store.results(run_id)
        attempts = store.attempts(run_id)
        meta = store.meta(run_id)
        late = store.late_results(run_id)
    job_ids = [r["job_id"] for r in results]
    figures = {
        "jobs": args.jobs,
        "results": len(results),
        "distinct_results": len(set(job_ids)),
        "duplicates": len(job_ids) - len(set(job_ids)),
        "lost": counts.get("LOST", 0),
        "late_attempts": len(late),
        "statuses": dict(counts),
        "visibility_timeout_s": 3900,
        "deadline_s": meta["deadline_s"],
        "jobs_delivered_more_than_once": sum(1 for v in attempts.values() if v > 1),
        "total_deliveries": sum(attempts.values()),
        "events": events,
        "seconds": round(took, 1),
    }
    save("soak", figures)
    assert len(results) == len(set(job_ids)) == args.jobs and counts == {"SYNTHETIC": args.jobs}, figures
    assert took < meta["deadline_s"], figures


if __name__ == "__main__":
    main()
