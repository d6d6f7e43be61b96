"""Render the README's example HTML report and screenshot it with headless chromium.

The data is an illustrative fixture (labelled so in the page: catalog "example"), not a
measurement: 12 families on cpu and two GPUs, 8 runs of history, one regression.

    .venv/bin/python scripts/report_screenshot.py [--out docs/report-html.png]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleet.protocol import base_result  # noqa: E402
from orchestrator.report import assemble, render_html  # noqa: E402

FAMILIES = {
    "llama": "LlamaForCausalLM",
    "smollm2": "LlamaForCausalLM",
    "t5": "T5ForConditionalGeneration",
    "bart": "BartForConditionalGeneration",
    "wav2vec2": "Wav2Vec2ForCTC",
    "whisper": "WhisperForConditionalGeneration",
    "xclip": "XCLIPModel",
    "minilm": "BertModel",
    "bert": "BertModel",
    "gpt2": "GPT2LMHeadModel",
    "vit": "ViTModel",
    "clip": "CLIPModel",
}
DEVICES = ("cpu", "cuda:0", "cuda:1")


def _status(rng: random.Random, family: str, device: str) -> str:
    if family in {"minilm", "smollm2", "bert"}:
        return "REAL"
    return rng.choices(["REAL", "SYNTHETIC", "FAILED", "SKIPPED"], [6, 3, 1, 0.5 if device != "cpu" else 0])[0]


def results(run_id: str, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for family, arch in FAMILIES.items():
        for device in DEVICES:
            r: dict[str, Any] = dict(
                base_result({"run_id": run_id, "job_id": f"{family}@{device}", "family": family, "device": device})
            )  # type: ignore[typeddict-item]
            status = _status(rng, family, device)
            gpu = device != "cpu"
            r.update(
                status=status,
                architecture=arch,
                model_used=f"example/{family}" if status == "REAL" else f"synthetic:{family}",
                source="cache" if status == "REAL" else "synthetic",
                worker=f"{'gpu' if gpu else 'cpu'}@node1",
                delivery=1,
                environment={"torch": "2.13.0", "transformers": "5.24.0", "cuda": "12.8" if gpu else None},
            )
            if status in {"REAL", "SYNTHETIC"}:
                base = rng.uniform(2, 40) * (0.3 if gpu else 1.0)
                r["metrics"] = {
                    "latency_ms_p50": round(base, 2),
                    "latency_ms_p95": round(base * 1.2, 2),
                    "peak_rss_mb": round(rng.uniform(600, 2400), 0),
                    **({"cuda_peak_allocated_mb": round(rng.uniform(200, 3000), 1)} if gpu else {}),
                }
            elif status == "FAILED":
                r["error"] = {"kind": rng.choice(["load_error", "inference_error"]), "message": "example failure"}
            else:
                r["error"] = {"kind": "no_worker", "message": "no live worker serves queue 'gpu'"}
            out.append(r)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "report-html.png")
    args = p.parse_args()
    history_runs = [(f"2026112{i}-060000-scheduled", results(f"r{i}", i)) for i in range(8)]
    current = history_runs[-1][1]
    previous = {r["job_id"]: r for r in history_runs[-2][1]}
    llama = next(r for r in current if r["job_id"] == "llama@cuda:0")
    previous["llama@cuda:0"] = {**llama, "status": "REAL"}  # one regression to show
    llama.update(status="FAILED", error={"kind": "inference_error", "message": "CUDA error: illegal memory access"})
    history = [(run_id, {r["job_id"]: r["status"] for r in rs}) for run_id, rs in history_runs]
    meta = {"run_id": history_runs[-1][0], "started_at": 1_795_845_600.0, "finished_at": 1_795_846_320.0}
    meta |= {"catalog": "example (illustrative data)", "origin": "scripts/report_screenshot.py"}
    data = assemble(meta, current, history_runs[-2][0], previous, history)  # type: ignore[arg-type]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(render_html(data))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
        flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
        flags += [f"--user-data-dir={tmp}/profile", f"--screenshot={args.out}", "--window-size=1400,1000"]
        subprocess.run(
            [chromium, *flags, page.as_uri()],
            check=True,
            capture_output=True,
        )
    print(args.out)


if __name__ == "__main__":
    main()
