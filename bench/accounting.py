"""The accounting's own cost on a 10,000-job run (orchestrator/accounting.py, fleet/store/ledger.py).

A run of N jobs on 4 workers (2 cpu with 2 slots, 2 cuda with 1) is written through the store
API as workers write it: for every job, Ledger.started and Ledger.finished (the worker's two
extra round trips) around a result with sent_at/started_at/finished_at; 1 % of the jobs get no
result (LOST or expired at the deadline, which has passed). Then the run's report is built from
Redis, and the accounting timed apart: its extra reads plus account(), and account() alone.

    python -m bench.accounting [--jobs 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import private_fleet, save
from bench.render import fixture_results
from fleet.protocol import Job
from fleet.store import ResultStore
from orchestrator import accounting, metrics, report, runs

WORKERS = (("cpu@a", "cpu", 2), ("cpu@b", "cpu", 2), ("gpu0@c", "cuda", 1), ("gpu0@d", "cuda", 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=10_000)
    args = p.parse_args()
    run_id, start = "run-acc", time.time() - 7200.0  # two hours ago: the deadline has passed
    results = fixture_results(run_id, args.jobs, ("REAL", "SYNTHETIC", "FAILED", "REAL"))
    with private_fleet("accounting") as (server, _workers):
        store = ResultStore(server.url)
        jobs: list[Job] = [
            {
                "run_id": run_id,
                "job_id": r["job_id"],
                "family": r["family"],
                "device": r["device"],
                "queue": "cpu" if r["device"] == "cpu" else "gpu",
                "family_spec": {},
                "time_limit_s": 60.0,
                "repeats": 1,
                "max_attempts": 3,
            }
            for r in results
        ]
        workers = [
            {"name": n, "devices": [d], "queues": ["cpu" if d == "cpu" else "gpu"], "concurrency": c}
            for n, d, c in WORKERS
        ]
        meta = {
            "run_id": run_id,
            "started_at": start,
            "deadline": start + 3600,
            "deadline_s": 3600,
            "catalog": "bench",
            "origin": "bench",
            "total": len(jobs),
            "workers_at_submit": workers,
        }
        store.create_run(meta, jobs)
        for w in workers:  # live: a job without a result is lost (or expired), not "no worker"
            store.registry.heartbeat(str(w["name"]), {**w, "instance": f"inst-{w['name']}"}, ttl=600)
        # each worker slot runs its jobs back to back, 0.5 s each, 0.1 s apart
        slots = {d: [(n, i) for n, dd, c in WORKERS if dd == d for i in range(c)] for d in ("cpu", "cuda")}
        clock = {(n, i): start + 1.0 for n, _, c in WORKERS for i in range(c)}
        kept, ledger_s = [], []
        for k, r in enumerate(results):
            pool = slots[r["device"]]
            name, slot = pool[k % len(pool)]
            began = clock[(name, slot)]
            r.update(worker=name, sent_at=start, started_at=began, finished_at=began + 0.5)
            clock[(name, slot)] = began + 0.6
            store.begin_attempt(run_id, r["job_id"])  # the delivery count every worker keeps already
            t0 = time.perf_counter()
            store.ledger.started(run_id, r["job_id"], jobs[k]["queue"], name, f"inst-{name}", 1)
            if k % 100 == 7:  # 1 %: taken and never answered (lost)
                ledger_s.append(time.perf_counter() - t0)
                continue
            store.ledger.finished(run_id, r["job_id"], jobs[k]["queue"], name, f"inst-{name}")
            ledger_s.append(time.perf_counter() - t0)
            kept.append(r)
        store.write_results(run_id, kept)

        t0 = time.perf_counter()
        current = runs.view(store, run_id)
        view_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = accounting.collect(store, run_id, current, {"cpu": 0.1, "cuda": 2.5})
        collect_s = time.perf_counter() - t0
        pure = []
        late = store.late_results(run_id)
        attempts, holders = store.attempts(run_id), store.ledger.holders(run_id)
        ledger = store.ledger.run_counts(run_id)
        for _ in range(3):
            t0 = time.perf_counter()
            accounting.account(
                current.meta,
                current.results,
                current.total,
                current.finished,
                late=late,
                attempts=attempts,
                holders=holders,
                ledger=ledger,
            )
            pure.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        data = report.build(store, run_id, prices={"cpu": 0.1, "cuda": 2.5})
        build_s = time.perf_counter() - t0
        md_s, md_without_s = [], []
        for _ in range(2):  # the markdown with and without the accounting section, alternately
            t0 = time.perf_counter()
            md = report.render_markdown(data)
            md_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report.render_markdown({**data, "accounting": None, "incomplete": None})
            md_without_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        prom = metrics.exposition(store, run_id)
        metrics_s = time.perf_counter() - t0
    c = acc["completeness"]
    assert c["asked"] == args.jobs and c["final"] == len(kept), c  # the figures are the run's
    assert md.splitlines()[0].startswith("# INCOMPLETE:"), md.splitlines()[0]
    save(
        "accounting",
        {
            "jobs": args.jobs,
            "final": c["final"],
            "missing": c["reasons"],
            "worker_ledger_ms_per_job_p50": round(statistics.median(ledger_s) * 1000, 3),
            "worker_ledger_ms_per_job_p95": round(sorted(ledger_s)[int(0.95 * len(ledger_s))] * 1000, 3),
            "view_from_redis_s": round(view_s, 3),
            "accounting_collect_s": round(collect_s, 3),
            "accounting_pure_s": round(min(pure), 3),
            "report_build_s": round(build_s, 3),
            "accounting_share_of_build": round(collect_s / build_s, 3),
            "render_markdown_s": round(min(md_s), 3),
            "render_markdown_without_accounting_s": round(min(md_without_s), 3),
            "metrics_exposition_s": round(metrics_s, 3),
            "metrics_bytes": len(prom),
            "cost": acc["cost"],
            "devices": acc["devices"],
        },
    )


if __name__ == "__main__":
    main()
