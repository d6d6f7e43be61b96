"""The framework overhead of two versions of the worker side by side, for a before/after figure
that survives a loaded machine: each version's fleet-worker on a private Redis of its own (this
checkout's, and the one in --before, e.g. a `git archive` of the commit before), raw Celery on a
third, short rounds alternating raw, this, before. Per round: wall ms per job, and CPU ms per job
of the worker (main and pool process) and its redis-server (what the machine's load does not
inflate as much as it inflates wall time), also apart per process (`cpu_ms_per_job_by_process`:
the Celery main process, the pool process, redis-server). The medians of the per-round ratios
are the figures.

    python -m bench.overhead_ab --before DIR [--jobs 150] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from pathlib import Path

import psutil

import bench.common as common
from bench.overhead import CELERY, fleet_round, raw_round
from orchestrator.redis_server import RedisServer

RAW_FLAGS = ("--loglevel", "WARNING", "--without-gossip", "--without-mingle")  # as bench.overhead's


ROLES = ("main", "pool", "redis")


def _roles(pid: int, server: RedisServer) -> dict[str, list[psutil.Process]]:
    """The worker started as pid (fleet-worker's launcher, or a Celery worker itself): its pool
    processes (the leaves of its tree), its Celery main process (with the launcher, which waits),
    and its redis-server."""
    top = psutil.Process(pid)
    tree = [top, *top.children(recursive=True)]
    pool = [p for p in tree if not p.children()]
    return {"main": [p for p in tree if p not in pool], "pool": pool, "redis": [_server(server)]}


def _server(server: RedisServer) -> psutil.Process:
    assert server.proc is not None, "a started redis-server"
    return psutil.Process(server.proc.pid)


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--before", type=Path, required=True, help="a checkout of the version to compare against")
    p.add_argument("--jobs", type=int, default=150)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    if not (args.before / "workers" / "app.py").is_file():
        raise SystemExit(f"--before {args.before}: not a checkout of this project")
    this = common.ROOT
    wall: dict[str, list[float]] = {"raw": [], "this": [], "before": []}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    by_role: dict[str, dict[str, list[float]]] = {k: {r: [] for r in ROLES} for k in wall}
    load = [round(os.getloadavg()[0], 2)]
    with (
        common.private_fleet("ab-this") as (s_this, w_this),
        common.private_fleet("ab-before") as (s_before, w_before),
        common.private_fleet("ab-raw") as (s_raw, _),
    ):
        os.environ["FLEET_REDIS_URL"] = s_raw.url  # bench.raw_app reads it at import
        raw = subprocess.Popen(
            [*CELERY, "-A", "bench.raw_app", "worker", "-Q", "raw", "-c", "1", "-P", "prefork", *RAW_FLAGS],
            cwd=this,
            env=dict(os.environ, PYTHONPATH=str(this)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            p_this = w_this.start("this", concurrency=1)
            common.ROOT = args.before  # Workers.start runs fleet-worker from common.ROOT
            p_before = w_before.start("before", concurrency=1)
            common.ROOT = this
            urls = {"raw": s_raw.url, "this": s_this.url, "before": s_before.url}
            raw_round(s_raw.url, 20)
            fleet_round(s_this.url, 20)
            fleet_round(s_before.url, 20)
            procs = {
                "raw": _roles(raw.pid, s_raw),
                "this": _roles(p_this.pid, s_this),
                "before": _roles(p_before.pid, s_before),
            }
            for r in range(args.rounds):
                order = ["raw", "this", "before"] if r % 2 == 0 else ["before", "this", "raw"]
                for k in order:
                    c0 = {role: _cpu(ps) for role, ps in procs[k].items()}
                    took = raw_round(urls[k], args.jobs) if k == "raw" else fleet_round(urls[k], args.jobs)
                    wall[k].append(1000 * took / args.jobs)
                    used = {role: 1000 * (_cpu(ps) - c0[role]) / args.jobs for role, ps in procs[k].items()}
                    cpu[k].append(sum(used.values()))
                    for role, ms in used.items():
                        by_role[k][role].append(ms)
        finally:
            common.ROOT = this
            raw.terminate()
            raw.wait(20)
    load.append(round(os.getloadavg()[0], 2))

    def ratio(a: list[float], b: list[float]) -> float:
        return round(statistics.median([x / y for x, y in zip(a, b, strict=True)]), 3)

    common.save(
        "overhead_ab",
        {
            "before": str(args.before),
            "jobs_per_round": args.jobs,
            "rounds": args.rounds,
            "wall_ms_per_job_median": {k: round(statistics.median(v), 2) for k, v in wall.items()},
            "cpu_ms_per_job_median": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
            "cpu_ms_per_job_by_process": {
                k: {role: round(statistics.median(v), 3) for role, v in roles.items()} for k, roles in by_role.items()
            },
            "this_over_raw": {"wall": ratio(wall["this"], wall["raw"]), "cpu": ratio(cpu["this"], cpu["raw"])},
            "before_over_raw": {"wall": ratio(wall["before"], wall["raw"]), "cpu": ratio(cpu["before"], cpu["raw"])},
            "this_over_before": {"wall": ratio(wall["this"], wall["before"]), "cpu": ratio(cpu["this"], cpu["before"])},
            "load_average_1min": load,
            "rounds_wall_ms": {k: [round(x, 2) for x in v] for k, v in wall.items()},
            "rounds_cpu_ms": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
        },
    )


if __name__ == "__main__":
    main()
