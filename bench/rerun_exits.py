"""A run where some jobs fail and are rerun, on two pool processes: every rerun replaces its
pool process. Counts what each job's end took: results, LOST, the deliveries of each run of a
job (counter), WorkerLostError in the worker's log, and the wall time.

    python -m bench.rerun_exits [--ok 200] [--failing 80] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import redis

from bench.common import Workers, private_fleet, save
from fleet.broker import make_app
from fleet.catalog import Catalog, Family
from fleet.settings import RunSettings
from fleet.store import ResultStore, keys
from orchestrator.runs import wait
from orchestrator.submit import submit


def catalog(ok: int, failing: int) -> Catalog:
    def fam(name: str, check: str) -> Family:
        return Family(name=name, check=check, architectures=("LlamaForCausalLM",), synthetic="llama")

    fams = {f"ok{i}": fam(f"ok{i}", "causal_lm") for i in range(ok)}
    fams.update({f"bad{i}": fam(f"bad{i}", "raises") for i in range(failing)})  # tests/plugins/faulty_checks.py
    return Catalog("bench", fams)


def measure(workers: Workers, url: str, ok: int, failing: int, concurrency: int) -> dict[str, object]:
    workers.start("rx", concurrency=concurrency, env={"FLEET_PLUGINS": "tests.plugins.faulty"})
    store = ResultStore(url)
    t0 = time.perf_counter()
    run_id = submit(store, make_app(url), catalog(ok, failing), None, ["cpu"], RunSettings(repeats=1, reruns=1))
    counts = wait(store, run_id, poll_s=0.05)
    wall = time.perf_counter() - t0
    results = store.results(run_id)
    client = redis.Redis.from_url(url, decode_responses=True)
    deliveries = Counter(int(v) for v in client.hgetall(keys.run(run_id, "attempts")).values())
    log = (workers.tmp / "worker-rx.log").read_text(errors="replace")
    return {
        "jobs": ok + failing,
        "wall_s": round(wall, 2),
        "counts": dict(counts),
        "results": len(results),
        "lost": sorted(r["job_id"] for r in results if r["status"] == "LOST"),
        "reruns_in_the_same_process": sum(
            1 for r in results if r.get("reruns") and len({x["pid"] for x in r["reruns"]}) < len(r["reruns"])
        ),
        "counters_by_deliveries": {str(k): v for k, v in sorted(deliveries.items())},
        "worker_lost_errors": log.count("WorkerLostError('Worker exited prematurely"),
        "processes_replaced": log.count("replacing pool process"),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ok", type=int, default=200)
    p.add_argument("--failing", type=int, default=80)
    p.add_argument("--concurrency", type=int, default=2)
    a = p.parse_args()
    with private_fleet("rerun_exits") as (server, workers):
        figures = measure(workers, server.url, a.ok, a.failing, a.concurrency)
    save("rerun_exits", figures)


if __name__ == "__main__":
    main()
