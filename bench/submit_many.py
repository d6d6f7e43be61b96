"""Submitting 10,000 jobs (one connection, pipelined publishing): seconds, with no worker.

python -m bench.submit_many [--jobs 10000]
"""

from __future__ import annotations

import argparse
import time

from bench.common import catalog, private_fleet, save
from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.submit import submit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=10_000)
    args = p.parse_args()
    with private_fleet("submit") as (server, _workers):
        store = ResultStore(server.url)
        cat = catalog("noop", [f"noop{i}" for i in range(args.jobs)])
        t0 = time.perf_counter()
        submit(store, make_app(server.url), cat, None, ["cpu"], RunSettings(), order="catalog")
        took = time.perf_counter() - t0
        queued = len(store.transport.queued("cpu"))
    assert queued == args.jobs, queued
    save("submit_many", {"jobs": args.jobs, "submit_s": round(took, 3), "jobs_per_s": round(args.jobs / took, 1)})


if __name__ == "__main__":
    main()
