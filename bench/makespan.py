"""Makespan: 40 equal CPU-bound checks on W = 1 and W = 2 worker processes, against the
ideal (total work / W, the work being the durations the jobs measured themselves) and
against the same work run as tests with pytest-xdist -n W.
Target: within 10 % of the ideal.

    python -m bench.makespan [--jobs 40] [--seconds 0.25]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, catalog, private_fleet, save
from fleet.broker import make_app
from fleet.settings import RunSettings
from fleet.store import ResultStore
from orchestrator.runs import wait
from orchestrator.submit import submit

XDIST_TEST = """
import pytest
from bench.plugins import spin

@pytest.mark.parametrize("i", range({jobs}))
def test_spin(i):
    spin({seconds})
"""


def fleet(url: str, jobs: int) -> tuple[float, float]:
    """(makespan, total work): work is the sum of the durations the jobs measured themselves."""
    store = ResultStore(url)
    cat = catalog("spin", [f"spin{i}" for i in range(jobs)])
    t0 = time.perf_counter()
    run_id = submit(store, make_app(url), cat, None, ["cpu"], RunSettings(repeats=1), order="catalog")
    counts = wait(store, run_id, poll_s=0.02)
    took = time.perf_counter() - t0
    assert counts == {"SYNTHETIC": jobs}, counts
    return took, sum(r["metrics"]["job_s"] for r in store.results(run_id))


def xdist(tmp: Path, jobs: int, seconds: float, w: int) -> float:
    test = tmp / "test_spin_bench.py"
    test.write_text(XDIST_TEST.format(jobs=jobs, seconds=seconds))
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", str(w), "-p", "no:cacheprovider", str(test)],
        cwd=tmp,
        env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--seconds", type=float, default=0.25)
    args = p.parse_args()
    rows = []
    with private_fleet("makespan") as (server, workers):
        for w in (1, 2):
            workers.start(f"w{w}", concurrency=w, env={"BENCH_SPIN_S": str(args.seconds)})
            fleet(server.url, 4)  # warm the pool
            took, work = fleet(server.url, args.jobs)
            workers.stop_all()
            ideal = work / w
            x = xdist(Path(tempfile.mkdtemp(prefix="bench-xdist-")), args.jobs, args.seconds, w)
            rows.append(
                {
                    "workers": w,
                    "ideal_s": round(ideal, 3),
                    "fleet_s": round(took, 3),
                    "fleet_over_ideal": round(took / ideal, 3),
                    "xdist_s": round(x, 3),
                    "xdist_over_ideal": round(x / ideal, 3),
                }
            )
    save("makespan", {"jobs": args.jobs, "seconds_per_job": args.seconds, "rows": rows, "target_over_ideal": 1.1})


if __name__ == "__main__":
    main()
