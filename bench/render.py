"""Rendering a report of 10,000 results (markdown, JSON, JUnit, HTML), and reading them from Redis;
and the HTML report at 1,500 and 10,000 results: render time, size, and how long headless chromium
takes to load it (--dump-dom, when chromium is installed). Targets: markdown under 1 s at 10,000;
HTML under 0.5 s at 1,500; the HTML page of 10,000 under 3 MB and loaded in under 3 s.

    python -m bench.render [--results 10000] [--html-results 1500 10000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import private_fleet, save
from fleet.protocol import Job
from fleet.store import ResultStore
from orchestrator import report


def fixture_results(run_id: str, n: int, status_cycle: tuple[str, ...]) -> list[dict]:
    out = []
    for i in range(n):
        fam, dev = f"family{i // 2:05d}", ("cpu" if i % 2 == 0 else "cuda")
        status = status_cycle[i % len(status_cycle)]
        out.append(
            {
                "run_id": run_id,
                "job_id": f"{fam}@{dev}",
                "family": fam,
                "device": dev,
                "status": status,
                "model_used": f"org/model-{i}",
                "architecture": "LlamaForCausalLM",
                "source": "cache",
                "revision": "a" * 40,
                "weights_sha256": "b" * 64,
                "attempts": [
                    {
                        "candidate": f"org/big-{i}",
                        "outcome": "skipped",
                        "error_kind": "too_large",
                        "detail": "weights 9000 MiB need 1.2x, cpu has 8000 MiB free",
                        "seconds": 0.01,
                    },
                    {
                        "candidate": f"org/model-{i}",
                        "outcome": "loaded",
                        "error_kind": None,
                        "detail": "",
                        "seconds": 1.2,
                    },
                ],
                "metrics": {
                    "load_s": 1.2,
                    "first_inference_s": 0.05,
                    "latency_ms_p50": 10.0 + i % 7,
                    "latency_ms_p95": 12.0,
                    "throughput": 800.0,
                    "throughput_unit": "tokens/s",
                    "peak_rss_mb": 900.0,
                    "parameters": 68_000_000,
                    "dtype": "float32",
                    "job_s": 3.0,
                },
                "environment": {"torch": "2.13.0", "transformers": "5.24.0", "cuda": None, "model_device": dev},
                "output": {},
                "error": None,
                "worker": "w1",
                "delivery": 1,
                "started_at": 1_790_000_000.0,
                "finished_at": 1_790_000_003.0,
            }
        )
    return out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_load_s(html: str) -> float | None:
    """Seconds headless chromium takes to load the page and dump its DOM (None: no chromium)."""
    if CHROMIUM is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-chromium-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
        argv = [CHROMIUM, *flags, f"--user-data-dir={tmp}/profile", "--dump-dom", page.as_uri()]
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - t0
        if done.returncode != 0 or "model-fleet report" not in done.stdout:
            raise SystemExit(f"chromium could not load the page: {done.stderr[-2000:]}")
        return round(seconds, 2)


def html_page(n: int) -> tuple[float, str]:
    """The HTML report of n results with a baseline and 10 runs of history (model assembled in memory)."""
    results = fixture_results("run-b", n, ("REAL", "SYNTHETIC", "FAILED", "REAL"))
    previous = {r["job_id"]: r for r in fixture_results("run-a", n, ("REAL",))}

    # one job in seven changed status over the 10 runs
    def status(k: int, i: int, r: dict) -> str:
        return "FAILED" if k % 7 == 0 and i % 3 == 0 else str(r["status"])

    history = [(f"run-{i}", {r["job_id"]: status(k, i, r) for k, r in enumerate(results)}) for i in range(10)]
    meta = {"run_id": "run-b", "started_at": 1_790_086_400.0, "catalog": "bench", "origin": "bench"}
    data = report.assemble(meta, results, "run-a", previous, history)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    text = report.render_html(data)
    return time.perf_counter() - t0, text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", type=int, default=10_000)
    p.add_argument("--html-results", type=int, nargs="+", default=[1_500, 10_000])
    args = p.parse_args()
    with private_fleet("render") as (server, _workers):
        store = ResultStore(server.url)
        for run_id, started, cycle in (
            ("run-a", 1_790_000_000.0, ("REAL",)),
            ("run-b", 1_790_086_400.0, ("REAL", "SYNTHETIC", "FAILED", "REAL")),
        ):
            results = fixture_results(run_id, args.results, cycle)
            jobs: list[Job] = [
                {
                    "run_id": run_id,
                    "job_id": r["job_id"],
                    "family": r["family"],
                    "device": r["device"],
                    "queue": "cpu",
                    "family_spec": {},
                    "time_limit_s": 60.0,
                    "repeats": 1,
                    "max_attempts": 1,
                }
                for r in results
            ]
            store.create_run(
                {
                    "run_id": run_id,
                    "started_at": started,
                    "deadline": started + 60,
                    "deadline_s": 60,
                    "catalog": "bench",
                    "origin": "bench",
                    "total": len(jobs),
                },
                jobs,
            )
            store.write_results(run_id, results)
        t0 = time.perf_counter()
        data = report.build(store, "run-b")
        build_s = time.perf_counter() - t0
        timings = {}
        for fmt, fn in report.RENDERERS.items():
            t0 = time.perf_counter()
            text = fn(data)
            timings[fmt] = (time.perf_counter() - t0, len(text))
    chromium_empty = chromium_load_s("<!doctype html><title>model-fleet report</title>")  # the browser's own start
    pages = {}
    for n in args.html_results:
        html_s, html = html_page(n)
        pages[str(n)] = {
            "render_s": round(html_s, 3),
            "bytes": len(html),
            "chromium_load_s": chromium_load_s(html),
        }
    save(
        "render",
        {
            "results": args.results,
            "build_from_redis_s": round(build_s, 3),
            "render_markdown_s": round(timings["md"][0], 3),
            "render_json_s": round(timings["json"][0], 3),
            "render_junit_s": round(timings["junit"][0], 3),
            "render_html_s": round(timings["html"][0], 3),
            "markdown_bytes": timings["md"][1],
            "html_bytes": timings["html"][1],
            "target_markdown_s": 1.0,
            "html_pages": pages,
            "chromium_empty_page_s": chromium_empty,
            "target_html_render_s_at_1500": 0.5,
            "target_html_bytes_at_10000": 3_000_000,
            "target_chromium_load_s_at_10000": 3.0,
        },
    )


if __name__ == "__main__":
    main()
