"""The architecture matrix without the fleet around it: every class's job through the worker's
own run_job (same builder, checks, time and memory limits), in plain child processes, to see
the harness's coverage and the slow classes quickly while working on the builder. The fleet's
figures (makespan, the report) come from bench.architectures; this one is for the builder.

    python -m bench.architecture_survey [--spec all] [--procs 2] [--chunk 40] [--out DIR]
    python -m bench.architecture_survey --out DIR --misses-md FILE   # the miss table of that run

Each child runs a chunk of classes and writes one JSON line per class; a child that dies (a
native crash, a hang past the hard limit) costs only its current class, which is recorded as
"crashed", and the rest of its chunk goes to a new child.

DIR gets all.json (one row per class) and run.json (the transformers and torch versions, the
command, the commit, the start, the wall time and the load average at start and end); with
--misses-md, the markdown table of every class that did not pass, whose fault it is and why
(the format of docs/reports/architecture-misses-*.md), from DIR, without running anything.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gc
import json
import os
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
    from orchestrator.report.coverage import fault, outcome
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
                "fault": None if outcome(result) == "passed" else fault(result),
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
    p.add_argument("--command", help="the command to record in run.json (default: this one)")
    p.add_argument("--misses-md", help="write the miss table of the run in --out to this file, run nothing")
    p.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        _child(args.child, Path(args.child_out))
        return
    if args.misses_md:
        outdir = Path(args.out)
        meta = json.loads((outdir / "run.json").read_text())
        rows = json.loads((outdir / "all.json").read_text())
        Path(args.misses_md).write_text(misses_md(rows, meta))
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
    meta = _meta(args, len(classes))
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
    meta.update(wall_s=round(time.perf_counter() - t0, 1), load_end=list(os.getloadavg()))
    (outdir / "run.json").write_text(json.dumps(meta, indent=1))
    summarize(results, time.perf_counter() - t0)


def _meta(args: argparse.Namespace, classes: int) -> dict[str, Any]:
    import torch
    import transformers

    command = args.command or f"python -m bench.architecture_survey --spec {args.spec} --procs {args.procs}"
    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "command": command,
        "commit": _commit(),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "spec": args.spec,
        "procs": args.procs,
        "classes": classes,
        "load_start": list(os.getloadavg()),
    }


def _commit() -> str:
    """The checkout's commit, "+dirty" when tracked files differ from it (unknown outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _age(out: Path) -> float:
    return time.time() - out.stat().st_mtime


PASSING = ("SYNTHETIC", "REAL", "UNVERIFIED", "FLAKY")
FAULTS = ("harness", "library", "host", "unclassed")
LEGEND = (
    "Harness: our builder or inputs cannot do it yet (the reason says what is missing). Library: it fails the same "
    "way with the class's own unshrunk default config (load_error: that config cannot even be built). Host: a time "
    "limit reached (60 s per class; crashed: the survey's {limit:.0f} s hard limit or a native crash; not a verdict "
    "on the class). Unclassed: the shrunk twin ran a forward pass and the check failed after it (generation, output "
    "validation); no default config was tried for those."
)


def misses_md(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The miss table of a survey run: every class that did not pass, its kind, whose fault
    (orchestrator.report.coverage.fault; a crashed child's class is the host's) and the reason."""
    misses = [
        {
            "class": r["class"],
            "kind": r.get("kind") or r["status"],
            "fault": r.get("fault") or ("host" if r["status"] == "crashed" else "unclassed"),
            "reason": str(r.get("message") or "").split("\n", 1)[0][:160],
        }
        for r in rows
        if r["status"] not in PASSING
    ]
    misses.sort(key=lambda m: (m["fault"], m["kind"], m["class"]))
    faults = collections.Counter(m["fault"] for m in misses)
    passed = len(rows) - len(misses)
    load = f"load average {meta['load_start'][0]:.1f} at its start, {meta['load_end'][0]:.1f} at its end"
    lines = [
        f"# Architecture misses, transformers {meta['transformers']} (`{meta['command']}`, {meta['started'][:10]})",
        "",
        f"Every class that did not pass ({len(misses)} of {len(rows)}), with whose fault it is: "
        + ", ".join(f"{f} {faults[f]}" for f in FAULTS if faults[f])
        + ".",
        LEGEND.format(limit=HARD_LIMIT_S),
        f"Measured with `bench.architecture_survey` (the worker's run_job in {meta['procs']} plain processes, no "
        f"Redis) at `{meta['commit']}`, transformers {meta['transformers']}, torch {meta['torch']}, started "
        f"{meta['started']}, {load}: {passed} of {len(rows)} passed ({passed / max(len(rows), 1):.1%}), "
        f"{meta['wall_s']:.0f} s wall." + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "| Class | Kind | Fault | Reason |",
        "|---|---|---|---|",
        *(f"| {m['class']} | {m['kind']} | {m['fault']} | {m['reason'].replace('|', '/')} |" for m in misses),
    ]
    return "\n".join(lines) + "\n"


def summarize(results: list[dict[str, Any]], elapsed: float) -> None:
    by_status = collections.Counter(r["status"] for r in results)
    print(f"\n{len(results)} classes in {elapsed:.0f} s: {dict(by_status)}")
    passed = sum(by_status.get(s, 0) for s in PASSING)
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
