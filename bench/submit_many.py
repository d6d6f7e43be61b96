"""Submitting many jobs (one connection, kombu's publish batches): seconds, with no worker.

The wall time depends on how much of the 2 cores this process gets; the CPU seconds of the
submitting process and of redis-server (psutil) say what the submit itself costs, and the
load average read before and after says how busy the machine was. Queue bytes per message:
Redis' own MEMORY USAGE of the queue list, divided by the jobs (and the mean message length).
Target: 10,000 jobs at >= 2,500 jobs/s.

python -m bench.submit_many [--jobs 10000]
"""

from __future__ import annotations

import argparse
import os
import time

import psutil
import redis

from bench.common import catalog, private_fleet, save
from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.submit import submit


def _redis_cpu(pid: int) -> float:
    """CPU seconds of the redis-server behind the exec shim's pid (the shim execs into it)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=10_000)
    args = p.parse_args()
    with private_fleet("submit") as (server, _workers):
        assert server.proc is not None
        store = ResultStore(server.url)
        cat = catalog("noop", [f"noop{i}" for i in range(args.jobs)])
        app = make_app(server.url)
        load_before = os.getloadavg()[0]
        redis_cpu0, cpu0 = _redis_cpu(server.proc.pid), time.process_time()
        t0 = time.perf_counter()
        submit(store, app, cat, None, ["cpu"], RunSettings(), order="catalog")
        took = time.perf_counter() - t0
        cpu, redis_cpu = time.process_time() - cpu0, _redis_cpu(server.proc.pid) - redis_cpu0
        load_after = os.getloadavg()[0]
        queued = store.transport.queued("cpu")
        queue_bytes = int(redis.Redis.from_url(server.url).memory_usage("cpu", samples=0) or 0)
    assert len(queued) == args.jobs, len(queued)
    save(
        "submit_many" if args.jobs == 10_000 else f"submit_many_{args.jobs}",
        {
            "jobs": args.jobs,
            "submit_s": round(took, 3),
            "jobs_per_s": round(args.jobs / took, 1),
            "submit_cpu_s": round(cpu, 3),
            "jobs_per_cpu_s": round(args.jobs / cpu, 1),
            "redis_cpu_s": round(redis_cpu, 3),
            "queue_bytes_per_message": round(queue_bytes / args.jobs),
            "mean_message_chars": round(sum(len(m) for m in queued) / args.jobs),
            "load_average_1min": [round(load_before, 2), round(load_after, 2)],
            "target_jobs_per_s": 2500,
        },
    )


if __name__ == "__main__":
    main()
