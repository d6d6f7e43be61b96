"""The flex variant alone on the classes in results.json, one process: CPU and wall seconds,
flex's own wall time and the dynamo graphs it compiled (run it from the checkout to measure)."""

from __future__ import annotations

import gc
import json
import resource
import time
from pathlib import Path

from fleet.settings import RunSettings
from orchestrator import architectures
from orchestrator.submit import plan_jobs
from workers.architectures import listing
from workers.core import run_job


def cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    classes = json.loads((Path(__file__).parent / "results.json").read_text())["classes"]
    catalog = architectures.catalog(listing(), classes)
    jobs = plan_jobs("s", catalog, None, ["cpu"], RunSettings(variants="flex", time_limit_s=300), pins=[])
    c0, w0, flex_wall, graphs, verdicts = cpu(), time.perf_counter(), 0.0, 0, []
    for job in jobs:
        result = run_job(job)
        gc.freeze()
        for v in (result.get("variants") or {}).get("results") or []:
            if v["variant"] == "flex":
                flex_wall += v.get("wall_s") or 0
                graphs += (v.get("compiled") or {}).get("graphs", 0)
                verdicts.append(v["verdict"])
    print(
        json.dumps(
            {
                "cpu_s": round(cpu() - c0, 1),
                "wall_s": round(time.perf_counter() - w0, 1),
                "flex_wall_s": round(flex_wall, 1),
                "graphs": graphs,
                "works": verdicts.count("works"),
                "n": len(jobs),
            }
        )
    )


if __name__ == "__main__":
    main()
