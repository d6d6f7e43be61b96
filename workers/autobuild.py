"""A synthetic model of any transformers class: a generic config shrinker, a small override
table for what the shrinker gets wrong, and inputs made per modality from the model's
`main_input_name` and forward signature. Seeded; results from it are always SYNTHETIC.

Anything that fails here is the harness's gap, not the model's: CheckFailure(harness_unsupported).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from typing import Any

import torch

from fleet.errors import CheckFailure, ErrorKind

SEED = 1234
PREFIX = "auto:"
BATCH, SEQ = 2, 8
# Scale keys the shrinker sets wherever a config (or sub-config) has them.
SHRINK: dict[str, Any] = {
    "hidden_size": 32,
    "d_model": 32,
    "n_embd": 32,
    "dim": 32,
    "embed_dim": 32,
    "intermediate_size": 64,
    "ffn_dim": 64,
    "d_ff": 64,
    "n_inner": 64,
    "hidden_dim": 64,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "num_hidden_layers": 2,
    "num_layers": 2,
    "n_layer": 2,
    "n_layers": 2,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "num_decoder_layers": 2,
    "num_attention_heads": 4,
    "num_heads": 4,
    "n_head": 4,
    "n_heads": 4,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "d_kv": 8,
    "moe_intermediate_size": 32,
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "moe_top_k": 2,
    "moe_k": 2,
    "top_k": 2,
    "n_group": 1,
    "topk_group": 1,
    "image_size": 32,
    "patch_size": 8,
}
# Per model_type fixes on top of the shrinker (the failure groups the survey found).
OVERRIDES: dict[str, dict[str, Any]] = {}


class Unsupported(CheckFailure):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.HARNESS_UNSUPPORTED, message[:500])


def class_info(class_name: str) -> tuple[type, str]:
    """The model class and its model_type, from transformers' own mappings."""
    import transformers
    from transformers.models.auto import modeling_auto

    from workers.architectures import TASKS, _names

    model_type = None
    for mapping in (*TASKS.values(), *(n for n in dir(modeling_auto) if n.endswith("_MAPPING_NAMES"))):
        for mt, value in getattr(modeling_auto, mapping, {}).items():
            if class_name in _names(value):
                model_type = mt
                break
        if model_type:
            break
    if model_type is None:
        raise CheckFailure(ErrorKind.UNSUPPORTED_ARCHITECTURE, f"{class_name} is in no transformers task mapping")
    try:
        cls = getattr(transformers, class_name)
    except (AttributeError, ImportError, RuntimeError) as exc:
        raise Unsupported(f"{class_name} cannot be imported: {type(exc).__name__}: {exc}") from None
    return cls, model_type


# Shrink variants tried in order until one builds, takes our inputs and runs a forward pass:
# the full shrink, then wider heads with the derived head size, then depth only (narrow configs).
VARIANTS: tuple[dict[str, Any], ...] = (
    SHRINK,
    {
        **{k: v for k, v in SHRINK.items() if k not in ("head_dim", "d_kv", "num_key_value_heads")},
        **{k: 64 for k in ("hidden_size", "d_model", "n_embd", "dim", "embed_dim")},
        **{k: 128 for k in ("intermediate_size", "ffn_dim", "d_ff", "n_inner", "hidden_dim")},
    },
    {k: 2 for k in ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers")},
)
MAX_UNSHRUNK_WIDTH = 1024  # the depth-only variant is tried only on configs this narrow


def _shrink(config: Any, values: dict[str, Any], depth: int = 0) -> None:
    from transformers import PretrainedConfig

    for key, value in values.items():
        current = getattr(config, key, None)
        if isinstance(current, int) and not isinstance(current, bool):
            try:
                setattr(config, key, value)
            except (AttributeError, ValueError, TypeError):
                pass
    layer_types = getattr(config, "layer_types", None)
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layer_types, list) and isinstance(layers, int) and len(layer_types) != layers:
        # one layer of each kind (a hybrid keeps its attention and its other layers)
        kinds = list(dict.fromkeys(layer_types))[:4]
        try:
            config.layer_types = kinds
            config.num_hidden_layers = len(kinds)
        except (AttributeError, ValueError, TypeError):
            pass
    if depth < 3:
        for key in list(vars(config)):
            sub = getattr(config, key, None)
            if isinstance(sub, PretrainedConfig):
                _shrink(sub, values, depth + 1)


def tiny_config(model_type: str, values: dict[str, Any] = SHRINK, config_class: Any = None) -> Any:
    from transformers import AutoConfig

    try:
        overrides = OVERRIDES.get(model_type, {})
        if config_class is not None and getattr(config_class, "model_type", None) == model_type:
            config = config_class(**overrides)
        else:
            config = AutoConfig.for_model(model_type, **overrides)
        _shrink(config, values)
    except Exception as exc:
        raise Unsupported(f"config for {model_type!r}: {type(exc).__name__}: {exc}") from None
    return config


def _width(config: Any) -> int:
    return max(int(getattr(config, k, 0) or 0) for k in ("hidden_size", "d_model", "n_embd", "dim", "embed_dim"))


def build_model(class_name: str, device: torch.device, task: str = "") -> tuple[Any, str]:
    """The first shrink variant that builds, takes our inputs and runs one forward pass. When
    none runs, the first that built (the check then shows the model's own error); when none
    builds, Unsupported with the first variant's reason."""
    cls, model_type = class_info(class_name)
    config_class: Any = getattr(cls, "config_class", None)
    own_type = getattr(config_class, "model_type", None)
    if isinstance(own_type, str) and own_type:  # the class's own config, not a type that reuses the class
        model_type = own_type
    first_error: Unsupported | None = None
    built: tuple[Any, str] | None = None
    for number, values in enumerate(VARIANTS):
        try:
            config = tiny_config(model_type, values, config_class)
            if getattr(config, "pad_token_id", 0) is None:  # batches of 2 need a padding token
                config.pad_token_id = 0
            if number == len(VARIANTS) - 1 and _width(config) > MAX_UNSHRUNK_WIDTH:
                continue
            torch.manual_seed(SEED)
            try:
                model = cls(config).to(device).eval()
            except Exception as exc:
                raise Unsupported(
                    f"{class_name} could not be built from a shrunk config: {type(exc).__name__}: {exc}"
                ) from None
            digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
            inputs = make_inputs(model, device, task)
        except Unsupported as exc:
            first_error = first_error or exc
            continue
        except Exception as exc:
            first_error = first_error or Unsupported(f"inputs for {class_name}: {type(exc).__name__}: {exc}")
            continue
        built = built or (model, digest)
        try:
            with torch.inference_mode():
                model(**inputs)
        except Exception:
            continue
        return model, digest
    if built is not None:
        return built
    assert first_error is not None
    raise first_error


def _get(config: Any, *keys: str, default: Any = None) -> Any:
    for cfg in (config, getattr(config, "vision_config", None), getattr(config, "audio_config", None)):
        for key in keys:
            value = getattr(cfg, key, None) if cfg is not None else None
            if value is not None:
                return value
    return default


def _size(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        return int(value[0])
    if isinstance(value, dict):
        return int(value.get("height") or value.get("shortest_edge") or 32)
    return int(value)


def make_inputs(model: Any, device: torch.device, task: str = "") -> dict[str, Any]:
    """Seeded dummy inputs for the model's main input and the decoder, by modality."""
    config = model.config
    main = getattr(model, "main_input_name", "input_ids")
    params = inspect.signature(model.forward).parameters
    g = torch.Generator().manual_seed(SEED)
    vocab = int(_get(config, "vocab_size", default=100) or 100)
    high = max(min(vocab, 100), 5)
    inputs: dict[str, Any] = {}
    if main == "input_ids":
        inputs["input_ids"] = torch.randint(3, high, (BATCH, SEQ), generator=g)
        eos = getattr(config, "eos_token_id", None)
        if isinstance(eos, int) and 0 <= eos < vocab:  # end each text as a tokenizer would
            inputs["input_ids"][:, -1] = eos
        if "attention_mask" in params:
            inputs["attention_mask"] = torch.ones(BATCH, SEQ, dtype=torch.long)
    elif main == "pixel_values":
        size = _size(_get(config, "image_size", default=32))
        channels = int(_get(config, "num_channels", default=3))
        frames = _get(config, "num_frames")
        shape = (
            (BATCH, frames, channels, size, size)
            if frames and "video" in type(model).__name__.lower()
            else (BATCH, channels, size, size)
        )
        inputs["pixel_values"] = torch.randn(*shape, generator=g)
    elif main == "pixel_values_videos":
        size = _size(_get(config, "image_size", "crop_size", default=32))
        frames = int(_get(config, "num_frames", "frames_per_clip", default=4))
        inputs[main] = torch.randn(BATCH, frames, int(_get(config, "num_channels", default=3)), size, size, generator=g)
    elif main == "input_values":
        channels = _get(config, "audio_channels")  # codecs take (batch, channels, samples)
        inputs["input_values"] = torch.randn(*((BATCH, int(channels)) if channels else (BATCH,)), 1600, generator=g)
    elif main == "input_features":
        bins = int(_get(config, "num_mel_bins", "feature_size", "input_feat_per_channel", default=80))
        length = int(_get(config, "max_source_positions", default=1500)) * 2
        length = min(length, 3000)
        inputs["input_features"] = torch.randn(BATCH, bins, length, generator=g)
    else:
        raise Unsupported(f"main input {main!r} is not an input kind the harness makes yet")
    if task == "zero_shot_image_classification":  # text and image together
        if "input_ids" not in inputs:
            inputs["input_ids"] = torch.randint(3, high, (BATCH, SEQ), generator=g)
        if "pixel_values" not in inputs:
            size = _size(_get(config, "image_size", default=32))
            inputs["pixel_values"] = torch.randn(BATCH, 3, size, size, generator=g)
    if "use_cache" in params:  # the forward check looks at outputs, not the cache
        inputs["use_cache"] = False
    if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = torch.randint(3, high, (BATCH, 4), generator=g)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@functools.cache
def _tasks() -> dict[str, str]:
    from workers.architectures import enumerate_classes

    return {row["class"]: row["task"] for row in enumerate_classes()}


def task_of(family: Any) -> str:
    """The task of an architecture job's class (its first task in workers.architectures.TASKS)."""
    return _tasks().get(str(family.synthetic).removeprefix(PREFIX), "")
