"""A synthetic model of any transformers class: a generic config shrinker, a small override
table for what the shrinker gets wrong, and inputs made per modality from the model's
`main_input_name` and forward signature. Seeded; results from it are always SYNTHETIC.

Anything that fails here is the harness's gap, not the model's: CheckFailure(harness_unsupported).
"""

from __future__ import annotations

import copy
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
# Secondary widths the shrinker also sets in its first variant: latent ranks and head sizes of
# MLA attention, linear attention and state-space layers, projections that must match the
# shrunk hidden size of another tower, and per-layer embeddings (measured: left alone they made
# a shrunk model take up to 27 s per forward pass or refuse the smaller tower's width).
SECONDARY: dict[str, Any] = {
    **dict.fromkeys(("kv_lora_rank", "q_lora_rank"), 16),
    **dict.fromkeys(("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_head_dim", "swa_head_dim"), 8),
    **dict.fromkeys(("linear_key_head_dim", "linear_value_head_dim", "linear_head_dim", "mamba_d_head"), 8),
    "qk_head_dim": 16,
    "rotary_dim": 4,  # GPT-J, CodeGen: rotary width within the shrunk head
    **dict.fromkeys(("attention_hidden_size", "cross_attention_hidden_size"), 32),  # RWKV; T5Gemma's decoder
    "num_queries": 8,  # DETR-style decoders take the top queries of a few image tokens
    "index_n_heads": 2,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "mamba_n_heads": 8,
    "linear_num_heads": 4,
    "n_groups": 1,  # Mamba-2 state groups must divide its heads
    "d_latents": 64,  # Perceiver: its latent array (1280 x 256 x 26 self-attentions took 30 s a job)
    "num_latents": 8,
    "num_self_attends_per_block": 2,
    "mamba_d_ssm": 64,
    **dict.fromkeys(("mamba_chunk_size", "chunk_size"), 8),  # state-space chunks: the text is 8 long
    "width_coefficient": 0.25,  # EfficientNet-style scaling
    "depth_coefficient": 0.5,
    **dict.fromkeys(("state_size", "ssm_state_size", "mamba_d_state"), 16),
    "hidden_size_per_layer_input": 8,
    **dict.fromkeys(("shared_expert_intermediate_size", "mlp_dim", "projector_hidden_size"), 64),
    **dict.fromkeys(
        ("out_hidden_size", "text_hidden_size", "encoder_hidden_size", "projection_dim", "fpn_hidden_size"), 32
    ),
    **dict.fromkeys(("embedding_size", "word_embed_proj_dim"), 32),
}
# Keys a config may leave None for the modeling code to derive from the full-size widths.
DERIVED = ("head_dim", "num_key_value_heads")
# Per model_type fixes on top of the shrinker (the failure groups the survey found).
# CONSTRUCT: arguments a default config cannot be built without; OVERRIDES: values set after
# shrinking, on every (sub-)config of that model_type.
CONSTRUCT: dict[str, dict[str, Any]] = {
    **{key: {"prediction_length": 4} for key in ("autoformer", "informer", "time_series_transformer")},
    # DETR-style models: transformers' own ResNet backbone instead of timm's (not installed)
    **{
        key: {"use_timm_backbone": False}
        for key in ("detr", "conditional_detr", "dab-detr", "deformable_detr", "table-transformer")
    },
}
OVERRIDES: dict[str, dict[str, Any]] = {
    # hybrids whose default layer pattern puts no attention layer in the first two layers
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "recurrent_gemma": {"num_hidden_layers": 3},  # block_types cycles recurrent, recurrent, attention
    "efficientnet": {"hidden_dim": 320},  # the top convolution's width at width_coefficient 0.25
    "xmod": {"default_language": "en_XX"},  # adapters need a language; the default config names one
    "gemma3n_text": {"num_kv_shared_layers": 0},  # KV sharing needs more layers than two
    "funnel": {"block_sizes": [1, 1, 1]},  # its depth is the sum of block sizes
    "prophetnet": {"num_encoder_layers": 2, "num_decoder_layers": 2},  # depth set per stack, not overall
    **{key: {"num_codebooks": 1} for key in ("musicgen_decoder", "musicgen_melody_decoder")},  # ids per codebook
    **{key: {"vocab_size": 32} for key in ("wav2vec2-bert", "wav2vec2-conformer")},  # a CTC head needs a vocabulary
    "esm": {"vocab_size": 33},  # the default config leaves the vocabulary unset
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},  # unset by default
}


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


DEPTH_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers")
# Shrink variants tried in order until one builds, takes our inputs and runs a forward pass: the
# full shrink with the secondary widths, the plain shrink, wider heads with the derived head
# size, then depth only (narrow configs).
VARIANTS: tuple[dict[str, Any], ...] = (
    {**SHRINK, **SECONDARY},
    SHRINK,
    {
        **{k: v for k, v in SHRINK.items() if k not in ("head_dim", "d_kv", "num_key_value_heads")},
        **{k: 64 for k in ("hidden_size", "d_model", "n_embd", "dim", "embed_dim")},
        **{k: 128 for k in ("intermediate_size", "ffn_dim", "d_ff", "n_inner", "hidden_dim")},
    },
    {**{k: 2 for k in DEPTH_KEYS}, "image_size": 64},  # a default-size image made the last try take up to 60 s
)
MAX_UNSHRUNK_WIDTH = 1024  # the depth-only variant is tried only on configs this narrow


def _homogenize(config: Any, values: dict[str, Any]) -> dict[int, dict[str, Any]] | None:
    """A heterogeneous config (per-layer overrides) refuses reads of its per-layer attributes:
    drop the overrides the shrinker is about to set, and hand back the rest to re-apply once
    the depth is known."""
    spec = config.__dict__.get("_heterogeneity_spec")
    if spec is None:
        return None
    kept = {
        idx: {k: v for k, v in overrides.items() if k not in values}
        for idx, overrides in spec.per_layer_overrides.items()
    }
    config.per_layer_config = None
    return {idx: o for idx, o in kept.items() if o}


def _per_stage_lists(config: Any, before: dict[str, Any]) -> None:
    """Lists with one entry per stage or layer (hidden_sizes, depths, strides of ConvNeXt-style
    models) are cut to the shrunk depth, so that every stage still has its entry."""
    for key, old in before.items():
        new = getattr(config, key, None)
        if not isinstance(old, int) or not isinstance(new, int) or new >= old:
            continue
        for name, value in list(vars(config).items()):
            if isinstance(value, (list, tuple)) and len(value) == old and name not in ("layer_types",):
                try:
                    setattr(config, name, type(value)(value[:new]))
                except (AttributeError, ValueError, TypeError):
                    pass


def _consistent_heads(config: Any) -> None:
    """Mamba-2 style layers split expand x hidden into heads: keep heads x head size equal to it.
    Latent attention (MLA: a kv_lora_rank) expands keys to every head: no grouped KV heads."""
    kv_heads = getattr(config, "num_key_value_heads", None)
    if isinstance(getattr(config, "kv_lora_rank", None), int) and isinstance(kv_heads, int):
        config.num_key_value_heads = config.num_attention_heads
    hidden = getattr(config, "hidden_size", None)
    pairs = (
        ("expand", "num_heads", "head_dim"),
        ("mamba_expand", "mamba_n_heads", "mamba_d_head"),
        ("mamba_expand", "n_mamba_heads", "mamba_headdim"),  # Zamba2
    )
    for expand, heads, head in pairs:
        e, n = getattr(config, expand, None), getattr(config, heads, None)
        if isinstance(hidden, int) and isinstance(e, int) and isinstance(n, int) and n and hasattr(config, head):
            if "state_size" in vars(config) or expand == "mamba_expand":
                setattr(config, head, e * hidden // n)
                if hasattr(config, "mamba_d_ssm") and expand == "mamba_expand":
                    config.mamba_d_ssm = e * hidden


def _mrope(config: Any) -> None:
    """Multimodal rotary sections (Qwen2-VL, GLM-4V, ...) must sum to half the rotary width,
    which the shrunk head size changes; the modeling code's own default is sized for the full model."""
    rope = getattr(config, "rope_parameters", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if not rope or not isinstance(rope, dict) or not isinstance(heads, int) or not isinstance(hidden, int) or not heads:
        return
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    factor = rope.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None) or 1.0
    half = int(head_dim * float(factor)) // 2
    third = half // 3
    config.rope_parameters = {**rope, "mrope_section": [half - 2 * third, third, third]}


def _shrink(config: Any, values: dict[str, Any], depth: int = 0, mrope: bool = False) -> None:
    from transformers import PretrainedConfig

    per_layer = _homogenize(config, values)
    depths = {key: getattr(config, key, None) for key in DEPTH_KEYS}
    for key, value in values.items():
        current = getattr(config, key, None)
        numeric = (int, float) if isinstance(value, float) else int  # a float key takes an int default too
        if key == "image_size" and isinstance(current, (list, tuple)) and len(current) == 2:
            current, value = current[0], type(current)([value, value])  # (height, width)
        derived = current is None and key in DERIVED and key in vars(config)
        if derived or (isinstance(current, numeric) and not isinstance(current, bool)):
            try:
                setattr(config, key, value)
            except (AttributeError, ValueError, TypeError, NotImplementedError):
                pass  # a config that refuses a key (Funnel, ProphetNet: their depth has its own keys)
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
    _per_stage_lists(config, depths)
    _consistent_heads(config)
    for key, value in OVERRIDES.get(getattr(config, "model_type", ""), {}).items():
        setattr(config, key, copy.deepcopy(value))
    if per_layer:
        layers = int(getattr(config, "num_hidden_layers", None) or 0)
        config.per_layer_config = {idx: o for idx, o in per_layer.items() if idx < layers} or None
    if mrope or "mrope_section" in (getattr(type(config), "ignore_keys_at_rope_validation", None) or ()):
        _mrope(config)
    if depth < 3:
        for key in list(vars(config)):
            sub = getattr(config, key, None)
            if isinstance(sub, PretrainedConfig):
                _shrink(sub, values, depth + 1, mrope)


def tiny_config(model_type: str, values: dict[str, Any] = SHRINK, config_class: Any = None, mrope: bool = False) -> Any:
    from transformers import AutoConfig

    try:
        overrides = copy.deepcopy(CONSTRUCT.get(model_type, {}))
        if config_class is not None and getattr(config_class, "model_type", None) == model_type:
            config = config_class(**overrides)
        else:
            config = AutoConfig.for_model(model_type, **overrides)
        _shrink(config, values, mrope=mrope)
    except Exception as exc:
        raise Unsupported(f"config for {model_type!r}: {type(exc).__name__}: {exc}") from None
    return config


def _uses_mrope(cls: type) -> bool:
    try:
        return "mrope_section" in inspect.getsource(inspect.getmodule(cls))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False


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
    mrope = _uses_mrope(cls)
    for number, values in enumerate(VARIANTS):
        try:
            config = tiny_config(model_type, values, config_class, mrope)
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
            inputs = make_inputs(model, device, task, PLANS[0])
        except Unsupported as exc:
            first_error = first_error or exc
            continue
        except Exception as exc:
            first_error = first_error or Unsupported(f"inputs for {class_name}: {type(exc).__name__}: {exc}")
            continue
        built = built or (model, digest)
        for plan in PLANS:
            try:
                inputs = inputs if plan == PLANS[0] else make_inputs(model, device, task, plan)
                with torch.inference_mode():
                    model(**inputs)
            except Exception:
                continue
            model.fleet_inputs = plan  # the check makes the same inputs (make_inputs reads it)
            model.fleet_variant = number
            return model, digest
    if built is not None:
        return built
    assert first_error is not None
    raise first_error


def describe(model: Any) -> str:
    """How the builder made this model, for the attempt's detail."""
    variant = getattr(model, "fleet_variant", None)
    if variant is None:  # no variant ran a forward pass: the check shows the model's own error
        return "shrunk default config (no variant ran a forward pass; first that built)"
    return f"shrunk default config (variant {variant}, inputs {getattr(model, 'fleet_inputs', PLANS[0])})"


def _get(config: Any, *keys: str, default: Any = None) -> Any:
    subs = ("vision_config", "audio_config", "encoder_config")
    for cfg in (config, *(getattr(config, sub, None) for sub in subs)):
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


# Input plans tried in order on a model that built: its main input with whatever its forward
# requires; then also the other modality its sub-configs name (dual encoders such as CLIP or
# CLAP run only on text and image together, while a LLaVA-style model refuses an image without
# image tokens, so "paired" comes second).
PLANS = ("main", "paired", "channels_last", "frames")
CHANNELS_LAST = PLANS[2]  # audio in the other common layout: features (batch, time, bins), waveform (batch, 1, samples)
FRAMES = PLANS[3]  # pixel_values as frames (batch, frames, channels, height, width): video models, image pairs
MASKS = ("attention_mask", "qformer_attention_mask", "decoder_attention_mask")
PACKED = ("grid_thw", "image_grid_thw")  # Qwen2-VL-style vision towers: flat patches and a grid


def make_inputs(model: Any, device: torch.device, task: str = "", plan: str | None = None) -> dict[str, Any]:
    """Seeded dummy inputs for the model's main input, what its forward requires, and for
    plan "paired" the other modality too."""
    config = model.config
    plan = plan or str(getattr(model, "fleet_inputs", PLANS[0]))
    main = getattr(model, "main_input_name", "input_ids")
    params = inspect.signature(model.forward).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and p.kind <= p.KEYWORD_ONLY]
    required = [n for n in required if n != "self"]
    g = torch.Generator().manual_seed(SEED)
    maker = _Maker(model, g, plan)
    inputs: dict[str, Any] = {}
    if any(p in params for p in PACKED) and (main in ("hidden_states", "pixel_values") or "hidden_states" in required):
        inputs.update(maker.packed(params))
    elif main in maker.kinds:
        inputs[main] = maker.kinds[main]()
    else:
        raise Unsupported(f"main input {main!r} is not an input kind the harness makes yet")
    for name in required:
        if name not in inputs:
            if name not in maker.kinds:
                raise Unsupported(f"{type(model).__name__}.forward requires {name!r}, an input the harness lacks")
            inputs[name] = maker.kinds[name]()
    if plan in ("paired", FRAMES) or task == "zero_shot_image_classification":  # text and image together
        pairs = (
            ("input_ids", None),
            ("pixel_values", "vision_config"),
            ("input_features", "audio_config"),
            ("bbox", None),
            ("future_values", None),
            ("future_time_features", None),
        )
        for name, sub in pairs:
            if name in params and name not in inputs and (sub is None or getattr(config, sub, None) is not None):
                inputs[name] = maker.kinds[name]()
    if "noise" in params and "pixel_values" in inputs:
        inputs["noise"] = maker.noise()
    for name in MASKS:  # a mask beside each text input
        text = name.replace("attention_mask", "input_ids")
        if name in params and text in inputs and name not in inputs:
            inputs[name] = torch.ones_like(inputs[text])
    if "use_cache" in params:  # the forward check looks at outputs, not the cache
        inputs["use_cache"] = False
    decoder = "decoder_input_ids"
    if decoder in params and getattr(config, "is_encoder_decoder", False) and decoder not in inputs:
        inputs[decoder] = maker.text()  # as long as the text: BART's classifier reads eos from both
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


class _Maker:
    """Seeded tensors by input name, sized from the model's config."""

    def __init__(self, model: Any, g: torch.Generator, plan: str = PLANS[0]) -> None:
        self.model, self.config, self.g = model, model.config, g
        self.channels_last, self.frames = plan == CHANNELS_LAST, plan == FRAMES
        vocab = int(_get(self.config, "vocab_size", default=100) or 100)
        self.vocab, self.high = vocab, max(min(vocab, 100), 5)
        self.kinds = {
            "input_ids": self.text,
            "qformer_input_ids": self.text,
            "decoder_input_ids": self.text,
            "token_type_ids": lambda: torch.zeros(BATCH, SEQ, dtype=torch.long),
            "bbox": self.bbox,
            "pixel_values": self.image,
            "pixel_values_videos": self.video,
            "input_values": self.waveform,
            "input_features": self.features,
            "query_embeds": self.query,
            # time series: a history (with lags), its time features and mask, and the horizon
            "past_values": lambda: torch.randn(*self._past_shape(), generator=self.g),
            "past_observed_mask": lambda: torch.ones(self._past_shape()),
            "past_values_padding": lambda: torch.zeros(self._past_shape()),
            "past_time_features": lambda: self.time_features(self._past_shape()[1]),
            "future_values": lambda: torch.randn(BATCH, self._horizon(), generator=self.g),
            "future_time_features": lambda: self.time_features(self._horizon()),
            "freq": lambda: torch.zeros(BATCH, 1, dtype=torch.long),
            "noise": self.noise,
            "inputs": self.perceiver,
        }

    def text(self, length: int = SEQ) -> torch.Tensor:
        ids = torch.randint(3, self.high, (BATCH, length), generator=self.g)
        eos = getattr(self.config, "eos_token_id", None)
        if length == SEQ and isinstance(eos, int) and 0 <= eos < self.vocab:  # end each text as a tokenizer would
            ids[:, -1] = eos
        return ids

    def bbox(self) -> torch.Tensor:  # layout models: boxes with x0 <= x1 and y0 <= y1
        corners = torch.randint(0, 1000, (BATCH, SEQ, 2, 2), generator=self.g).sort(dim=2).values
        return corners.transpose(2, 3).reshape(BATCH, SEQ, 4)

    def image(self) -> torch.Tensor:
        config = self.config
        size = _size(_get(config, "image_size", default=32))
        channels = int(_get(config, "num_channels", default=3))
        frames = _get(config, "num_frames")
        if self.frames or (frames and "video" in type(self.model).__name__.lower()):
            return torch.randn(BATCH, int(frames or 2), channels, size, size, generator=self.g)
        return torch.randn(BATCH, channels, size, size, generator=self.g)

    def video(self) -> torch.Tensor:
        size = _size(_get(self.config, "image_size", "crop_size", default=32))
        frames = int(_get(self.config, "num_frames", "frames_per_clip", default=4))
        channels = int(_get(self.config, "num_channels", default=3))
        return torch.randn(BATCH, frames, channels, size, size, generator=self.g)

    def waveform(self) -> torch.Tensor:
        channels = _get(self.config, "audio_channels")  # codecs take (batch, channels, samples)
        if self.channels_last:
            channels = channels or 1
        return torch.randn(*((BATCH, int(channels)) if channels else (BATCH,)), 1600, generator=self.g)

    def features(self) -> torch.Tensor:
        bins = int(_get(self.config, "num_mel_bins", "feature_size", "input_feat_per_channel", default=80))
        if self.channels_last:  # stacked frames where the model takes them (Wav2Vec2-BERT)
            bins = int(_get(self.config, "feature_projection_input_dim", "input_dim", default=bins))
            return torch.randn(BATCH, 64, bins, generator=self.g)
        length = min(int(_get(self.config, "max_source_positions", default=1500)) * 2, 3000)
        return torch.randn(BATCH, bins, length, generator=self.g)

    def query(self) -> torch.Tensor:
        queries = int(_get(self.config, "num_query_tokens", default=4))
        hidden = int(_get(self.config, "hidden_size", default=32))
        return torch.randn(BATCH, queries, hidden, generator=self.g)

    def _past_shape(self) -> tuple[int, ...]:
        c = self.config
        lags = getattr(c, "lags_sequence", None)
        context = int(getattr(c, "context_length", None) or 32)
        if lags:  # Informer-style: the context plus the largest lag, one value per step
            return (BATCH, context + max(lags))
        channels = int(getattr(c, "num_input_channels", 0) or 0)
        return (BATCH, context, channels) if channels else (BATCH, context)

    def perceiver(self) -> torch.Tensor:
        """Perceiver's generic `inputs`: token ids, an image, or embeddings, by the class's preprocessor."""
        name = type(self.model).__name__
        if name.endswith(("MaskedLM", "SequenceClassification")):
            return self.text()
        if "Image" in name:
            return self.image()
        return torch.randn(BATCH, SEQ, int(getattr(self.config, "d_model", 32)), generator=self.g)

    def noise(self) -> torch.Tensor:
        """The masking noise of a masked autoencoder (ViTMAE): seeded, or every pass masks anew."""
        size = _size(_get(self.config, "image_size", default=32))
        patch = _size(_get(self.config, "patch_size", default=8))
        return torch.rand(BATCH, (size // patch) ** 2, generator=torch.Generator().manual_seed(SEED))

    def _horizon(self) -> int:
        return int(getattr(self.config, "prediction_length", None) or 4)

    def time_features(self, length: int) -> torch.Tensor:
        return torch.randn(BATCH, length, int(getattr(self.config, "num_time_features", 0) or 0), generator=self.g)

    def packed(self, params: Any) -> dict[str, torch.Tensor]:
        """Flattened patches and their (t, h, w) grid, one small image per batch item."""
        config = _sub(self.config, "vision_config")
        patch = int(getattr(config, "patch_size", 8) or 8)
        temporal = int(getattr(config, "temporal_patch_size", 1) or 1)
        channels = int(getattr(config, "in_channels", None) or getattr(config, "num_channels", None) or 3)
        merge = int(getattr(config, "spatial_merge_size", 1) or 1)
        side = 2 * merge
        grid = torch.tensor([[1, side, side]] * BATCH)
        patches = torch.randn(BATCH * side * side, channels * temporal * patch * patch, generator=self.g)
        grid_name = next(p for p in PACKED if p in params)
        main = "hidden_states" if "hidden_states" in params else "pixel_values"
        return {main: patches, grid_name: grid}


def _sub(config: Any, name: str) -> Any:
    return getattr(config, name, None) or config


def leading_sizes(config: Any, inputs: dict[str, Any]) -> set[int]:
    """The sizes an output's first dimension may have: the batch, or for packed patches the
    patch count (before or after the spatial merge) and the number of images."""
    sizes = {BATCH}
    grid = next((inputs[p] for p in PACKED if p in inputs), None)
    if isinstance(grid, torch.Tensor):
        patches = int(grid.prod(dim=-1).sum())
        merge = int(getattr(_sub(config, "vision_config"), "spatial_merge_size", 1) or 1)
        sizes |= {1, patches, patches // (merge * merge), int(grid.shape[0])}  # 1: one packed sequence
    return sizes


@functools.cache
def _tasks() -> dict[str, str]:
    from workers.architectures import enumerate_classes

    return {row["class"]: row["task"] for row in enumerate_classes()}


def task_of(family: Any) -> str:
    """The task of an architecture job's class (its first task in workers.architectures.TASKS)."""
    return _tasks().get(str(family.synthetic).removeprefix(PREFIX), "")
