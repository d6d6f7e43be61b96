"""Reports against a long history: 30 finished runs of N results each, filled into a private Redis
through the store's own API (each run folded into the per-job summaries when it is finished, as
orchestrator.runs does), then `report` (md, json), `runs` and `status` run as the CLI, each in its
own process: wall time, CPU time, peak RSS (VmHWM), bytes Redis sent (INFO total_net_output_bytes). The
report model is also built in-process both ways, from the summaries and reading every earlier run
(baselines.collect), side by side. Targets at 30 x 10,000: report < 2 s and < 400 MB, runs < 1 s,
status < 0.5 s. Redis memory: MEMORY USAGE of a run's results and of the summaries.

    python -m bench.history_scale [--runs 30] [--results 2196 10000]
    python -m bench.history_scale --results 10000 --redis-url redis://127.0.0.1:6427/0  # reuse a filled Redis
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import redis

from bench.common import private_fleet, save
from bench.render import fixture_results
from fleet.protocol import Job, Status
from fleet.store import ResultStore, keys
from orchestrator import report, summaries

DAY = 86_400.0
START = 1_790_000_000.0
HARNESS = "harness_unsupported"


def _shape(r: dict[str, Any], i: int, run: int, runs: int, rng: random.Random) -> dict[str, Any] | None:
    """One job's outcome in run number `run`, by the kind of history job i has (i % 10); None:
    the job is not in that run."""
    kind = i % 10
    m = r["metrics"]
    m["latency_ms_p50"] = round(10.0 + (i % 7) + rng.uniform(-0.3, 0.3), 3)
    m["load_s"] = round(1.2 + rng.uniform(-0.05, 0.05), 3)
    status = Status.REAL
    if kind == 1 and run >= runs - 3:  # a latency regression in the last runs
        m["latency_ms_p50"] *= 1.6
    elif kind == 2:  # status changes every 7 runs
        status = Status.REAL if (run // 7) % 2 == 0 else Status.FAILED
    elif kind == 3 and rng.random() < 0.3:  # flaky now and then
        status = Status.FLAKY
    elif kind == 4 and run % 2:  # not in every run
        return None
    elif kind == 5 and run >= runs // 2:  # other weights from half way
        r["weights_sha256"] = "c" * 64
        m["latency_ms_p50"] *= 2
    elif kind == 6:  # synthetic, sometimes real
        status = Status.SYNTHETIC if rng.random() < 0.7 else Status.REAL
        if status == Status.SYNTHETIC:
            r["weights_sha256"] = None
    elif kind == 7 and rng.random() < 0.4:  # the harness cannot build it now and then
        status = Status.FAILED
        r["error"] = {"kind": HARNESS, "message": "no builder"}
    elif kind == 8 and run % 5 == 4:
        status = Status.LOST
        r["error"] = {"kind": "worker_lost", "message": "no result before the run deadline"}
    elif kind == 9:
        status = rng.choice([s for s in Status])
        if rng.random() < 0.2:
            r["environment"]["torch"] = "2.14.0"
    r["status"] = str(status)
    if status not in (Status.REAL, Status.SYNTHETIC, Status.UNVERIFIED, Status.FLAKY):
        r["metrics"] = {}
    if status == Status.FAILED and not r.get("error"):
        r["error"] = {"kind": "inference_error", "message": f"boom in run {run}"}
    return r


def history(runs: int, per_run: int, seed: int = 7) -> Iterator[tuple[dict[str, Any], list[Job], list[dict[str, Any]]]]:
    """(meta, jobs, results) of each run, oldest first: status changes, flaky and absent jobs,
    weights changes, harness gaps, lost jobs and metric regressions."""
    rng = random.Random(seed)
    for run in range(runs):
        run_id = f"2026{run:04d}T000000Z-h{run:05d}"
        started = START + run * DAY
        results = [
            x for i, r in enumerate(fixture_results(run_id, per_run, ("REAL",))) if (x := _shape(r, i, run, runs, rng))
        ]
        for r in results:
            r["started_at"], r["finished_at"] = started + 1, started + 4
        jobs: list[Job] = [
            {
                "run_id": run_id,
                "job_id": r["job_id"],
                "family": r["family"],
                "device": r["device"],
                "queue": r["device"],
                "family_spec": {"version": run // 10},
                "time_limit_s": 60.0,
                "repeats": 1,
                "max_attempts": 1,
            }
            for r in results
        ]
        meta = {
            "run_id": run_id,
            "started_at": started,
            "deadline": started + 3600,
            "deadline_s": 3600,
            "catalog": "bench",
            "origin": "bench",
            "total": len(jobs),
        }
        yield meta, jobs, results


def fill(store: ResultStore, runs: int, per_run: int, seed: int = 7, fold: bool = True) -> list[float]:
    """Write the history; each run is finished and (fold) folded into the summaries as it ends.
    Returns the seconds each fold took."""
    folds = []
    for meta, jobs, results in history(runs, per_run, seed):
        store.create_run(meta, jobs)
        store.write_results(meta["run_id"], results)
        store.mark_finished(meta["run_id"])
        if fold:
            t0 = time.perf_counter()
            summaries.catch_up(store)
            folds.append(time.perf_counter() - t0)
    return folds


def _sent(r: redis.Redis) -> int:
    return int(r.info("stats")["total_net_output_bytes"])


# The command in a fresh interpreter that reports, at exit, its peak RSS since exec (VmHWM: wait4's
# ru_maxrss would count the benchmark's own memory, copied at fork) and the seconds after imports.
_CHILD = """
import sys, time
import orchestrator.cli as cli
cli.build_parser(sys.argv[1:])  # imports the command's module (the CLI imports only the one named)
t0 = time.perf_counter()
rc = cli.main(sys.argv[1:])
work = time.perf_counter() - t0
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM"))
sys.stderr.write(f"\\nBENCH {work} {hwm}\\n")
sys.exit(rc)
"""


def _cli(url: str, r: redis.Redis, *argv: str) -> dict[str, float]:
    """One CLI command in its own process: wall seconds (the interpreter's start and imports
    included), its CPU seconds, seconds after imports, peak RSS (MB), MB Redis sent."""
    env = {**os.environ, "FLEET_REDIS_URL": url}
    before = _sent(r)
    cpu = _children_cpu()
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu
    if p.returncode != 0:
        raise SystemExit(f"orchestrator {' '.join(argv)} exited {p.returncode}: {p.stderr[-2000:]}")
    work, hwm_kb = p.stderr.rsplit("BENCH ", 1)[1].split()
    return {
        "s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "after_imports_s": round(float(work), 2),
        "rss_mb": round(int(hwm_kb) / 1024, 1),
        "read_mb": round((_sent(r) - before) / 1e6, 2),
    }


def _children_cpu() -> float:
    """CPU seconds (user and system) of the children waited for so far: on a shared machine, what
    a command costs whatever the load (its wall time is that plus its waits for the CPU)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _import_floor() -> float:
    """Seconds of `orchestrator --help`: the interpreter and the CLI's imports, no work."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator", "--help"], stdout=subprocess.DEVNULL, check=True)
    return round(time.perf_counter() - t0, 2)


def _memory(r: redis.Redis, run_id: str, per_run: int) -> dict[str, Any]:
    run_bytes = sum(int(r.memory_usage(keys.run(run_id, p), samples=0) or 0) for p in keys.RUN_PARTS)
    results_bytes = int(r.memory_usage(keys.run(run_id, "results"), samples=0) or 0)
    summary_bytes = int(r.memory_usage(keys.SUMMARIES, samples=0) or 0)
    return {
        "run_mb": round(run_bytes / 1e6, 2),
        "per_result_bytes": round(results_bytes / per_run),
        "summaries_mb": round(summary_bytes / 1e6, 2),
        "summary_per_job_bytes": round(summary_bytes / per_run),
        "used_memory_mb": round(int(r.info("memory")["used_memory"]) / 1e6, 1),
    }


def at(runs: int, per_run: int, url: str | None = None) -> dict[str, Any]:
    """The figures at runs x per_run, in a private Redis filled here; url: a Redis of your own
    instead, filled only when it holds no run yet (then kept: measure again without refilling)."""
    if url is not None:
        return _measure(url, runs, per_run)
    with private_fleet(f"history-{per_run}") as (server, _workers):
        return _measure(server.url, runs, per_run)


def _measure(url: str, runs: int, per_run: int) -> dict[str, Any]:
    store = ResultStore(url)
    r = redis.Redis.from_url(url, decode_responses=True)
    out: dict[str, Any] = {"runs": runs, "results_per_run": per_run}
    if not store.run_ids(1):
        t0 = time.perf_counter()
        folds = fill(store, runs, per_run)
        out["fill_s"] = round(time.perf_counter() - t0, 1)
        out["fold_s_median"] = round(sorted(folds)[len(folds) // 2], 2)
    latest = store.run_ids(1)[0]
    out["memory"] = _memory(r, latest, per_run)
    for name, use_full in (("build_summaries", False), ("build_full_read", True)):
        before = _sent(r)
        t0 = time.perf_counter()
        report.build(store, latest, full_read=use_full)
        out[name] = {"s": round(time.perf_counter() - t0, 2), "read_mb": round((_sent(r) - before) / 1e6, 2)}
    out["build_ratio"] = round(out["build_full_read"]["s"] / max(out["build_summaries"]["s"], 1e-3), 1)
    out["import_floor_s"] = _import_floor()
    out["report_md"] = _cli(url, r, "report", "--format", "md")
    out["report_json"] = _cli(url, r, "report", "--format", "json")
    out["report_html"] = _cli(url, r, "report", "--format", "html")
    out["runs_cmd"] = _cli(url, r, "runs")
    out["status_cmd"] = _cli(url, r, "status")
    r.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--results", type=int, nargs="+", default=[2196, 10_000])
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="measure against this Redis (one --results size), filled only when it holds no run: measuring "
        "again skips the fill; the figures are printed, not saved",
    )
    args = p.parse_args()
    if args.redis_url:
        if len(args.results) != 1:
            p.error("--redis-url holds one history: give one --results size")
        print(json.dumps(at(args.runs, args.results[0], args.redis_url), indent=2))
        return
    figures = {f"at_{n}": at(args.runs, n) for n in args.results}
    figures["targets_at_10000"] = {"report_s": 2.0, "report_rss_mb": 400, "runs_s": 1.0, "status_s": 0.5}
    save("history_scale", figures)


if __name__ == "__main__":
    main()
