"""Where the time of `orchestrator run --family minilm` goes, against the import floor.

The floor is `python -c "import torch, transformers"` (a worker cannot start faster). Each
embedded run is split, from its own output: boot (start to the run submitted: the CLI's
imports, Redis, the worker's imports and heartbeat, the submit), job (the result's own
started/finished times), wait (submitted to the progress line showing every result: the job
plus the polling), report (to the last report file written) and shutdown (to the process's
exit: stopping the workers and Redis). The first run on the state directory is not counted
(cold caches); the figures are medians of the warm runs after it.
Target: total <= floor + job + 3 s.

A second reference, the worker's import (`python -c "import workers.app"`: torch, transformers'
modeling stack (modeling_utils pulls torch._dynamo, torch.distributed.tensor, scipy, sympy),
Celery and the preloaded modeling code of the built-in families), tells apart what the worker
needs to load before any job can run from what the orchestration adds around it.

With --against DIR (a checkout of another commit, e.g. `git archive BASE | tar -x -C DIR`),
each round also runs that tree's `orchestrator run` on its own state directory, alternated with
this tree's, so that both see the same load: on a shared machine the ratio is the figure.

    python -m bench.embedded_run [--runs 3] [--family minilm] [--against DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, save

FLOOR = "import torch, transformers"
WORKER_IMPORT = "import workers.app"


def import_floor(n: int, code: str = FLOOR) -> float:
    times = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def one_run(state: Path, hf: Path, family: str, root: Path = ROOT) -> dict[str, float]:
    env = dict(os.environ, FLEET_HOME=str(state), HF_HOME=str(hf), HF_HUB_OFFLINE="1", PYTHONPATH=str(root))
    marks: dict[str, float] = {}
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", "--family", family],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None and proc.stdout is not None
    err = proc.stderr

    def read_stderr() -> None:
        buf = b""
        while chunk := os.read(err.fileno(), 4096):
            buf += chunk
            for part in buf.replace(b"\r", b"\n").split(b"\n"):
                text = part.decode(errors="replace")
                if "job(s)" in text and "submitted" not in marks:
                    marks["submitted"] = time.time()
                if "]" in text and "/" in text and "all" not in marks:
                    done, _, total = text.split("]")[1].split()[0].partition("/")
                    if done == total and done.isdigit():
                        marks["all"] = time.time()

    reader = threading.Thread(target=read_stderr)
    reader.start()
    out = proc.stdout.read().decode()
    proc.wait()
    t_exit = time.time()
    reader.join()
    if proc.returncode != 0:
        raise SystemExit(f"orchestrator run exited {proc.returncode}")
    paths = [Path(p) for p in out.split()]
    report_done = max(p.stat().st_mtime for p in paths)
    data: dict[str, Any] = json.loads(next(p for p in paths if p.suffix == ".json").read_text())
    job = max(r["finished_at_unix"] for r in data["results"]) - min(r["started_at_unix"] for r in data["results"])
    return {
        "total_s": t_exit - t0,
        "boot_s": marks["submitted"] - t0,
        "job_s": job,
        "wait_s": marks["all"] - marks["submitted"],
        "report_s": report_done - marks["all"],
        "shutdown_s": t_exit - report_done,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="warm runs measured (after one cold run)")
    p.add_argument("--family", default="minilm")
    p.add_argument("--against", type=Path, metavar="DIR", help="another tree's run, alternated with this one's")
    args = p.parse_args()
    if args.against is not None and not (args.against / "orchestrator" / "__main__.py").is_file():
        raise SystemExit(f"--against {args.against}: not a checkout of this project")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-embedded-") as tmp:
        state, hf = Path(tmp) / "state", Path(tmp) / "hf"
        cold = one_run(state, hf, args.family)
        if args.against is not None:
            one_run(Path(tmp) / "state-against", hf, args.family, args.against)  # its cold run
        floors, worker_imports, warm, against = [], [], [], []
        for _ in range(args.runs):  # interleaved: a load that comes and goes weighs on each alike
            floors.append(import_floor(1))
            worker_imports.append(import_floor(1, WORKER_IMPORT))
            warm.append(one_run(state, hf, args.family))
            if args.against is not None:
                against.append(one_run(Path(tmp) / "state-against", hf, args.family, args.against))
    floor, worker_import = statistics.median(floors), statistics.median(worker_imports)
    med = {k: round(statistics.median(r[k] for r in warm), 2) for k in warm[0]}
    budget = floor + med["job_s"] + 3.0
    figures: dict[str, Any] = {
        "family": args.family,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "import_floor_s": round(floor, 2),
        "worker_import_s": round(worker_import, 2),
        "floors_s": [round(x, 2) for x in floors],
        "worker_imports_s": [round(x, 2) for x in worker_imports],
        "cold_run": {k: round(v, 2) for k, v in cold.items()},
        "warm_runs": [{k: round(v, 2) for k, v in r.items()} for r in warm],
        "warm_median": med,
        "overhead_over_floor_and_job_s": round(med["total_s"] - floor - med["job_s"], 2),
        "overhead_over_worker_import_and_job_s": round(med["total_s"] - worker_import - med["job_s"], 2),
        "target_total_s": round(budget, 2),
        "met": med["total_s"] <= budget,
    }
    if against:
        other = {k: round(statistics.median(r[k] for r in against), 2) for k in against[0]}
        figures["against"] = {
            "tree": str(args.against),
            "warm_runs": [{k: round(v, 2) for k, v in r.items()} for r in against],
            "warm_median": other,
            "total_ratio": round(med["total_s"] / other["total_s"], 3),
            "saved_s": {k: round(other[k] - med[k], 2) for k in med},
        }
    save("embedded_run", figures)


if __name__ == "__main__":
    main()
