"""Where a class's flex variant spends its time once every cache is warm: the flex variant alone
on the 30 classes of ../flex_eager_block_mask/results.json, one process, the first four classes
left out (the process's one-time imports and compiler set-up). Prints flex's own wall time per
class; with a file name it also writes a cProfile of the measured classes.

    PYTHONPATH=$PWD python bench/results/flex_floor/flex_floor.py [PROFILE_OUT]

Run it twice: the first run fills the inductor cache (a class's first flex compile), the second
is the warm figure."""

from __future__ import annotations

import cProfile
import json
import sys
import time
from pathlib import Path

from fleet.settings import RunSettings
from orchestrator import architectures
from orchestrator.submit import plan_jobs
from workers.architectures import listing
from workers.core import run_job

WARMUP = 4


def main() -> None:
    here = Path(__file__).parent
    classes = json.loads((here.parent / "flex_eager_block_mask" / "results.json").read_text())["classes"]
    catalog = architectures.catalog(listing(), classes)
    jobs = plan_jobs("s", catalog, None, ["cpu"], RunSettings(variants="flex", time_limit_s=300), pins=[])
    profile = cProfile.Profile() if len(sys.argv) > 1 else None
    flex_s, graphs, reused, measured = 0.0, 0, 0, 0
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        if i == WARMUP:
            t0 = time.perf_counter()
        if profile is not None and i >= WARMUP:
            profile.enable()
        result = run_job(job)
        if profile is not None:
            profile.disable()
        if i < WARMUP:
            continue
        for v in (result.get("variants") or {}).get("results") or []:
            if v["variant"] == "flex":
                measured += 1
                flex_s += v.get("wall_s") or 0
                compiled = v.get("compiled") or {}
                graphs += compiled.get("graphs", 0)
                reused += compiled.get("by") == "compiled code reused"
    summary = {
        "classes": measured,
        "flex_wall_s": round(flex_s, 2),
        "flex_s_per_class": round(flex_s / max(measured, 1), 3),
        "graphs": graphs,
        "reused": reused,
        "jobs_wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary))
    if profile is not None:
        profile.dump_stats(sys.argv[1])


if __name__ == "__main__":
    main()
