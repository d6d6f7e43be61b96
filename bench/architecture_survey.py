"""The architecture matrix without the fleet around it: every class's job through the worker's
own run_job (same builder, checks, time and memory limits), in plain child processes, to see
the harness's coverage and the slow classes quickly while working on the builder. The fleet's
figures (makespan, the report) come from bench.architectures; this one is for the builder.

    python -m bench.architecture_survey [--spec all] [--procs 2] [--chunk 40] [--out FILE]

Each child runs a chunk of classes and writes one JSON line per class; a child that dies (a
native crash, a hang past the hard limit) costs only its current class, which is recorded as
"crashed", and the rest of its chunk goes to a new child.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HARD_LIMIT_S = 120.0


def _child(classes: list[str], out: Path) -> None:
    from fleet.settings import RunSettings
    from orchestrator import architectures
    from orchestrator.submit import plan_jobs
    from workers.architectures import listing
    from workers.core import run_job

    found = listing()
    with out.open("a") as fh:
        for cls in classes:
            fh.write(json.dumps({"class": cls, "started": True}) + "\n")
            fh.flush()
            (job,) = plan_jobs("survey", architectures.catalog(found, cls), None, ["cpu"], RunSettings(), pins=[])
            t0 = time.perf_counter()
            result = run_job(job)
            gc.freeze()  # as the worker does after each job (workers/app.py)
            err: dict[str, Any] = dict(result.get("error") or {})
            row = {
                "class": cls,
                "task": result.get("task"),
                "status": result["status"],
                "kind": err.get("kind"),
                "message": (err.get("message") or "")[:300],
                "wall_s": round(time.perf_counter() - t0, 3),
                "job_s": result.get("metrics", {}).get("job_s"),
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()


def _done(out: Path) -> tuple[set[str], str | None]:
    done: set[str] = set()
    started: str | None = None
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if row.get("started"):
                started = row["class"]
            else:
                done.add(row["class"])
                started = None
    return done, started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="all")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--chunk", type=int, default=40)
    p.add_argument("--out", default="/tmp/arch_survey")
    p.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        _child(args.child, Path(args.child_out))
        return
    from orchestrator import architectures

    rows = architectures.select(architectures.local_listing(), args.spec)
    classes = [r["class"] for r in rows]
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    for f in outdir.glob("part-*.jsonl"):
        f.unlink()
    queue = [classes[i : i + args.chunk] for i in range(0, len(classes), args.chunk)]
    running: list[tuple[subprocess.Popen[bytes], list[str], Path, float]] = []
    crashed: list[dict[str, Any]] = []
    serial = 0
    t0 = time.perf_counter()
    while queue or running:
        while queue and len(running) < args.procs:
            chunk = queue.pop(0)
            serial += 1
            out = outdir / f"part-{serial:04d}.jsonl"
            cmd = [sys.executable, "-m", "bench.architecture_survey", "--child-out", str(out), "--child", *chunk]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running.append((proc, chunk, out, time.monotonic()))
        time.sleep(0.5)
        for item in list(running):
            proc, chunk, out, _since = item
            done, started = _done(out)
            stuck = started is not None and proc.poll() is None and _age(out) > HARD_LIMIT_S
            if proc.poll() is None and not stuck:
                continue
            if stuck:
                proc.kill()
                proc.wait()
            running.remove(item)
            if started is not None:
                crashed.append(
                    {"class": started, "status": "crashed", "kind": "crashed", "message": f"rc {proc.returncode}"}
                )
            rest = [c for c in chunk if c not in done and c != started]
            if rest:
                queue.insert(0, rest)
        print(
            f"\r{sum(len(_done(f)[0]) for f in outdir.glob('part-*.jsonl'))}/{len(classes)} "
            f"{time.perf_counter() - t0:.0f}s",
            end="",
            file=sys.stderr,
            flush=True,
        )
    results = [json.loads(line) for f in sorted(outdir.glob("part-*.jsonl")) for line in f.read_text().splitlines()]
    results = [r for r in results if not r.get("started")] + crashed
    (outdir / "all.json").write_text(json.dumps(results, indent=1))
    summarize(results, time.perf_counter() - t0)


def _age(out: Path) -> float:
    return time.time() - out.stat().st_mtime


def summarize(results: list[dict[str, Any]], elapsed: float) -> None:
    by_status = collections.Counter(r["status"] for r in results)
    print(f"\n{len(results)} classes in {elapsed:.0f} s: {dict(by_status)}")
    passed = by_status.get("SYNTHETIC", 0)
    print(f"pass rate {passed / max(len(results), 1):.1%}; sum job_s {sum(r.get('wall_s') or 0 for r in results):.0f}")
    groups = collections.Counter(
        (r["status"], r.get("kind"), re.sub(r"\d+", "#", r.get("message") or "")[:90])
        for r in results
        if r["status"] != "SYNTHETIC"
    )
    for (status, kind, msg), n in groups.most_common(40):
        print(f"{n:4} {status:8} {kind}: {msg}")
    print("slowest:")
    for r in sorted(results, key=lambda r: -(r.get("wall_s") or 0))[:15]:
        print(f"  {r.get('wall_s')}  {r['class']} {r['status']}")


if __name__ == "__main__":
    main()
