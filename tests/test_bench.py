"""Every benchmark runs (tiny sizes, figures to a temporary folder), so none rots unnoticed.
The figures themselves are in BENCHMARKS.md; nothing here asserts a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

CASES = [
    ("render", ["--results", "200"], "render_markdown_s"),
    ("accounting", ["--jobs", "200"], "accounting_collect_s"),
    ("submit_many", ["--jobs", "50"], "submit_s"),
    ("overhead", ["--jobs", "15", "--rounds", "1", "--spin-ms", "5"], "ratio"),
    ("ordering", ["--short", "3", "--short-ms", "50", "--long-ms", "200"], "speedup"),
    ("makespan", ["--jobs", "4", "--seconds", "0.05"], "rows"),
    ("memory", ["--jobs", "4"], "tail_slope_mb_per_job"),
    ("latency_agreement", ["--repeats", "3"], "max_relative_difference"),
    ("worker_overhead", ["--jobs", "3"], "overhead_ms_p50"),
    ("offline_resolution", ["--skip-naive"], "black_hole_ours_s"),
    ("soak", ["--jobs", "30", "--kills", "1"], "distinct_results"),
    ("gguf", ["--rounds", "1"], "cached_convert_s_median"),
    ("host_key", ["--calls", "3", "--rounds", "1"], "warm_after_over_before"),
    ("lock_check", ["--calls", "20"], "lock_check_us_median"),
    ("quality_calibration", ["--no-smollm2", "--repeats", "1"], "max_quality_share"),
]


@pytest.mark.slow
@pytest.mark.service  # most benchmarks start their own redis-server and workers
@pytest.mark.timeout(900)  # each benchmark may take 600 s (its subprocess timeout)
@pytest.mark.parametrize(("name", "args", "key"), CASES, ids=[c[0] for c in CASES])
def test_benchmark_runs(name: str, args: list[str], key: str, tmp_path: Path) -> None:
    env = dict(os.environ, BENCH_RESULTS=str(tmp_path), PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf"))
    res = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = next(tmp_path.glob("*.json"))
    data = json.loads(out.read_text())
    assert key in data and data["command"].startswith(f"python -m bench.{name}")
