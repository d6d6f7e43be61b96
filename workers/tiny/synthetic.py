"""The last resort: a tiny random-weight model of the family's architecture, built locally
(`build`, the one entry point for every synthetic model: the catalog's builders here, plugin
builders, and "auto:<Class>" through workers.tiny.build).

The config comes from the first candidate's cached config when one exists (shrunk with the
TINY overrides), otherwise from TINY alone; tokenizers are built in memory (no download).
Weights are seeded, so the same synthetic model is identical on every device: the report
compares cpu and cuda outputs on it. Results from it are SYNTHETIC, never REAL.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from fleet import names
from fleet.catalog import Family
from fleet.errors import CheckFailure, ErrorKind
from workers import hub
from workers.checks.base import Bundle, Check
from workers.tiny import SEED

WORDS = (
    "the a an of to and in is was for on with as by at from it that this be are or "
    "quick brown fox jumps over lazy dog house wonderful man eating food piece bread stock market "
    "fell sharply today person playing guitar running beach someone cooking kitchen translate "
    "english german : . , ! ?"
).split()

_COMMON_TEXT = {"vocab_size": 128}
TINY: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        **_COMMON_TEXT,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    },
    "t5": {
        "model_type": "t5",
        **_COMMON_TEXT,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "decoder_start_token_id": 0,
        "pad_token_id": 0,
        "eos_token_id": 2,
    },
    "wav2vec2": {
        "model_type": "wav2vec2",
        "vocab_size": 32,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "conv_dim": [32, 32, 32],
        "conv_stride": [5, 4, 4],
        "conv_kernel": [10, 4, 4],
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "pad_token_id": 0,
        "do_stable_layer_norm": False,
        "feat_extract_norm": "group",
        "ctc_loss_reduction": "mean",
    },
    "xclip": {
        "model_type": "xclip",
        "projection_dim": 32,
        "prompt_layers": 1,
        "prompt_num_attention_heads": 4,
        "text_config": {
            **_COMMON_TEXT,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 32,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "num_frames": 4,
            "mit_hidden_size": 32,
            "mit_intermediate_size": 64,
            "mit_num_hidden_layers": 1,
            "mit_num_attention_heads": 4,
        },
    },
    "bert": {
        "model_type": "bert",
        **_COMMON_TEXT,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
    },
}
# Keys of a cached real config that describe scale (replaced) rather than behaviour (kept).
_SHRINK_KEYS = {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "conv_dim",
    "conv_stride",
    "conv_kernel",
    "max_position_embeddings",
}


def _word_tokenizer(specials: list[str], **special_map: str) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", **special_map)
    tok.model_max_length = 64
    return tok


def _ctc_tokenizer() -> Any:
    from transformers import Wav2Vec2CTCTokenizer

    letters = list("ETAONIHSRDLUMWCFGYPBVKXJQZ'")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate(letters)}}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vocab.json"
        path.write_text(json.dumps(vocab))
        return Wav2Vec2CTCTokenizer(str(path), word_delimiter_token="|")


# The tokenizer (and processor) each builder's model gets: built in memory, no download.
PREPROCESSING: dict[str, Callable[[], tuple[Any, Any]]] = {
    "llama": lambda: (
        _word_tokenizer(["[PAD]", "<s>", "</s>", "[UNK]"], pad_token="[PAD]", bos_token="<s>", eos_token="</s>"),
        None,
    ),
    "t5": lambda: (_word_tokenizer(["<pad>", "[UNK]", "</s>"], pad_token="<pad>", eos_token="</s>"), None),
    "bert": lambda: (_word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], pad_token="[PAD]"), None),
    "xclip": lambda: (_word_tokenizer(["[PAD]", "[UNK]", "<s>", "</s>"], pad_token="[PAD]"), None),
    "wav2vec2": lambda: (_ctc_tokenizer(), None),
}
names.verify("synthetic builder", names.SYNTHETIC_BUILDERS, TINY)
names.verify("synthetic preprocessing", names.SYNTHETIC_BUILDERS, PREPROCESSING)
# Modeling code the catalog's families accept beyond the synthetic builders' own (preloaded by workers).
PRELOAD_EXTRA = ("gpt_neox", "opt")


def modeling_modules() -> tuple[str, ...]:
    """transformers.models.* modules a worker preloads so that every pool child starts warm."""
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    own = [model_type_to_module_name(spec["model_type"]) for spec in TINY.values()]
    return tuple(dict.fromkeys([*own, *PRELOAD_EXTRA]))


def _deep_update(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _cached_config(family: Family) -> tuple[dict[str, Any], str] | None:
    first = next((c for c in family.candidates if c.id), None)
    if first is None or first.id is None:
        return None
    path = hub.cached_file(first.id, "config.json")
    if path is None:
        return None
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    kept = {k: v for k, v in cfg.items() if k not in _SHRINK_KEYS and not k.startswith("_")}
    return kept, first.id


_PLUGIN_BUILDERS: dict[str, Callable[[Family, Check, torch.device], Bundle]] = {}


def register_builder(name: str, fn: Callable[[Family, Check, torch.device], Bundle]) -> None:
    """Add a synthetic builder (plugins named in FLEET_PLUGINS)."""
    _PLUGIN_BUILDERS[name] = fn


def build(family: Family, check: Check, device: torch.device) -> Bundle:
    """A seeded tiny model of the family's synthetic architecture, on the device."""
    builder = family.synthetic
    if builder.startswith(names.AUTO_SYNTHETIC_PREFIX):
        return _build_auto(builder.removeprefix(names.AUTO_SYNTHETIC_PREFIX), family, device)
    if builder in _PLUGIN_BUILDERS:
        return _PLUGIN_BUILDERS[builder](family, check, device)
    if builder not in TINY:
        raise CheckFailure(ErrorKind.NO_CANDIDATE, f"family {family.name} has no synthetic builder")
    config_from = "builtin tiny config"
    spec = TINY[builder]
    cached = _cached_config(family)
    if cached and cached[0].get("model_type") == spec["model_type"]:
        spec = _deep_update(cached[0], spec)
        config_from = f"cached config of {cached[1]}, shrunk"
    spec = {k: v for k, v in spec.items() if k != "architectures"}
    config = transformers.AutoConfig.for_model(**spec)
    auto = getattr(transformers, check.auto_class)
    torch.manual_seed(SEED)
    model = auto.from_config(config).to(device).eval()
    tokenizer, processor = PREPROCESSING[builder]()
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
    return Bundle(
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        name=f"synthetic:{builder}",
        source="synthetic",
        revision=f"seed={SEED},config={digest[:12]}",
        architecture=type(model).__name__,
        built_from=config_from,
    )


def _build_auto(class_name: str, family: Family, device: torch.device) -> Bundle:
    """Any transformers class, shrunk (workers.tiny.build); its task comes from the class
    (workers.tiny.tasks)."""
    from workers.tiny import build as shrunk
    from workers.tiny.tasks import task_of

    task = task_of(family)
    model, digest = shrunk.build_model(class_name, device, task)
    return Bundle(
        model=model,
        name=f"synthetic:{names.AUTO_SYNTHETIC_PREFIX}{class_name}",
        source="synthetic",
        revision=f"seed={SEED},config={digest[:12]}",
        architecture=class_name,
        built_from=shrunk.describe(model),
        task=task,
    )
