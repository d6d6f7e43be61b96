"""A default config of any transformers model type, made small: a generic shrinker of scale
keys, secondary widths, a small override table for what the shrinker gets wrong, and the
variants an architecture job tries in order (workers.tiny.build)."""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import Any

from workers.tiny import Unsupported

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
    "spec_size": 64,  # CLAP's HTS-AT reads its mel spectrogram as a square image this wide (256: 4,096 patches)
    "num_layers_per_stack": 1,  # HRM: one layer per stack; its depth counts stacks x cycles (_stacked_depth)
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
    "upsample_initial_channel": 32,  # a HiFi-GAN vocoder's width (_vocoder_channels keeps 2 a stage)
    # cross-attention sized on its own (Dia's decoder: the encoder's width, heads and head size)
    **{f"cross_{k}": SHRINK[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")},
}
# Keys a config may leave None for the modeling code to derive from the full-size widths.
DERIVED = ("head_dim", "num_key_value_heads")
# PP-OCRv6 medium's intra-class block kernels (OVERRIDES): PaddleOCR's IntraCLBlock, 7/5/3 wide.
INTRACLASS_BLOCK = {
    "reduce_channel": [1, 1, 0],
    "return_channel": [1, 1, 0],
    **{
        f"vertical_long_to_small_conv_{r}": [[k, 1], 1, [k // 2, 0]]
        for r, k in (("longratio", 7), ("midratio", 5), ("shortratio", 3))
    },
    **{
        f"horizontal_small_to_long_conv_{r}": [[1, k], 1, [0, k // 2]]
        for r, k in (("longratio", 7), ("midratio", 5), ("shortratio", 3))
    },
    **{f"symmetric_conv_long_{r}": [k, 1, k // 2] for r, k in (("longratio", 7), ("midratio", 5), ("shortratio", 3))},
}
# Per model_type fixes on top of the shrinker (the failure groups the survey found).
# CONSTRUCT: arguments a default config cannot be built without; OVERRIDES: values set after
# shrinking, on every (sub-)config of that model_type.
CONSTRUCT: dict[str, dict[str, Any]] = {
    **{key: {"prediction_length": 4} for key in ("autoformer", "informer", "time_series_transformer")},
    # LW-DETR's default names no feature level for its projector (projector_scale_factors (): nothing for the
    # decoder to attend to, a torch.cat of no levels); its checkpoints' one level at scale 1 (lwdetr_small)
    "lw_detr": {"projector_scale_factors": [1.0]},
    # UVDoc's head concatenates the feature maps of all six backbone stages (6 x 128 channels); its default
    # backbone outputs only the last (the miss table called it the library's); its checkpoints output all six
    "uvdoc": {"backbone_config": {"model_type": "uvdoc_backbone", "out_features": [f"stage{i}" for i in range(1, 7)]}},
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
    # its hybrid layers share one attention block (tied): a twin needs two of them to tie
    "zamba": {"num_hidden_layers": 3, "layers_block_type": ["linear_attention", "hybrid", "hybrid"]},
    # defaults that leave unset what every checkpoint's config sets (the class cannot be built from them)
    # Qwen4-Exp's sparse-attention indexer: all five fields or none, one KV head, a budget of whole blocks
    "qwen4_exp_text": dict(
        indexer_n_heads=4, indexer_kv_heads=1, indexer_head_dim=8, indexer_budget=4, indexer_compress_ratio=2
    ),
    "deepseek_ocr2_text": {"mlp_layer_types": ["dense", "sparse"]},  # one dense and one MoE layer
    # ALIGN's image embeddings are its EfficientNet's last stage (320 x width_coefficient), compared with the text
    # projection (projection_dim, shrunk 32): 0.1 makes them equal (the plain shrink's unshrunk B7 vanished: NaN)
    "align_vision_model": {"width_coefficient": 0.1, "initializer_range": 0.2},
    # PP-OCRv6 medium's intra-class blocks, left None by its default config: PaddleOCR's IntraCLBlock kernels
    # ([kernel, stride, padding]: 7/5/3 vertical, horizontal and square, 1x1 to reduce and return the channels)
    "pp_ocrv6_medium_det": {"intraclass_block_config": INTRACLASS_BLOCK},
    # Granite 4 Vision's window Q-Former downsampler (query side / window side) and the vision layers it feeds to
    # which text layers: both left None by its default config (its checkpoints set them)
    "granite4_vision": {"downsample_rate": "1/2", "deepstack_layer_map": [[-1, 0], [-2, 1]]},
    # xLSTM: its blocks are num_blocks (not the depth), and its cache rounds the q/k and v widths up
    # to multiples of 64 where the layers do not: a width whose q/k part is 64 keeps them equal
    # SegGPT merges its prompt ensembles after layer merge_index (2 of 24) and reads intermediate layers by index:
    # indices that must name layers of the two (the batch stays doubled when no layer merges it)
    "seggpt": {"merge_index": 1, "intermediate_hidden_state_indices": [0, 1]},
    "xlstm": {"hidden_size": 64, "embedding_dim": 64, "qk_dim_factor": 1.0, "num_blocks": 2},
    # EdgeTAM video's perceiver pools the memory's feature grid in a square of windows (256 2-D latents: 16 x 16
    # windows of 64 x 64 features at 1024 pixels) and its memory attention's key rotary grid is that square
    # (16 x 16): on the shrunk 2 x 2 grid, 2 x 2 windows of one feature (16 per side left a window of 0 features)
    "edgetam_video": {"perceiver_resampler_num_latents_2d": 4, "memory_attention_rope_k_sizes": [2, 2]},
}


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


# Buckets of a hashed embedding (BLT's byte n-gram hashes: 500,002 x 6 tables of the width, 96 M
# parameters and 45 s a build): any count takes the ids, hashed modulo it.
HASH_BUCKETS = re.compile(r"hash\w*vocab")
BUCKETS = 1024


def _hash_buckets(config: Any) -> None:
    for key, value in list(vars(config).items()):
        if HASH_BUCKETS.search(key) and type(value) is int and value > BUCKETS:
            try:
                setattr(config, key, BUCKETS)
            except (AttributeError, ValueError, TypeError):
                pass


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


def _vocoder_channels(config: Any, old: Any) -> None:
    """A HiFi-GAN vocoder halves its channels at every upsampling stage: the shrunk
    upsample_initial_channel keeps at least 2 channels at the last one (BigVGAN's six stages in
    Qwen2.5-Omni: 128), never more than the default's (FastSpeech 2's and VITS's 512 made a
    waveform of a few mel frames take seconds)."""
    new, rates = vars(config).get("upsample_initial_channel"), vars(config).get("upsample_rates")
    if type(old) is not int or type(new) is not int or new == old or not isinstance(rates, (list, tuple)):
        return
    try:
        config.upsample_initial_channel = min(old, max(new, 2 ** (len(rates) + 1)))
    except (AttributeError, ValueError, TypeError):
        pass


def _codec_stages(config: Any, values: dict[str, Any]) -> None:
    """A convolutional codec whose stage widths double from num_filters at each downsampling
    stage (VibeVoice's acoustic tokenizer: 32 x 2^6 = 2048 channels deep, 26 blocks, 175 M
    parameters left unshrunk by the width keys: 30 s a forward pass) keeps its stages, one block
    each, its deepest stage 4 times the shrunk width."""
    keys = vars(config)
    filters, ratios, depths = keys.get("num_filters"), keys.get("downsampling_ratios"), keys.get("depths")
    new = values.get("hidden_size")
    if type(filters) is not int or type(new) is not int or not isinstance(ratios, (list, tuple)):
        return
    if not isinstance(depths, (list, tuple)) or not all(type(d) is int for d in depths):
        return
    try:
        config.num_filters = max(1, min(filters, 4 * new // 2 ** len(ratios)))
        config.depths = type(depths)(1 for _ in depths)
    except (AttributeError, ValueError, TypeError):
        pass


def _per_stage_lists(config: Any, before: dict[str, Any], backbone: bool = False) -> bool:
    """Lists with one entry per stage or layer (hidden_sizes, depths, strides of ConvNeXt-style
    models) are cut to the shrunk depth, so that every stage still has its entry. A backbone
    inside another model (backbone: a detector or segmenter reads its stages by name) keeps its
    stages instead, one block each (True then)."""
    kept = False
    for key, old in before.items():
        new = getattr(config, key, None)
        if not isinstance(old, int) or not isinstance(new, int) or new >= old:
            continue
        if backbone and len(getattr(config, "stage_names", ())) == old + 1:
            _keep_stages(config, key, old)
            kept = True
            continue
        for name, value in list(vars(config).items()):
            if isinstance(value, (list, tuple)) and len(value) == old and name not in ("layer_types",):
                try:
                    setattr(config, name, type(value)(value[:new]))
                except (AttributeError, ValueError, TypeError):
                    pass
    return kept


def _keep_stages(config: Any, key: str, stages: int) -> None:
    """A backbone's stages all kept, one block each, the heads doubling stage by stage from
    one (the stages' widths double from the shrunk width: heads must divide them)."""
    try:
        setattr(config, key, stages)
        for name in ("depths", "num_heads"):
            value = getattr(config, name, None)
            if isinstance(value, (list, tuple)) and len(value) == stages:
                setattr(config, name, type(value)(1 if name == "depths" else 2**i for i in range(stages)))
    except (AttributeError, ValueError, TypeError):
        pass


def _hybrid_attention(config: Any) -> None:
    """A Mamba hybrid whose default config has linear-attention layers only (GraniteMoeHybrid,
    Bamba: the checkpoints name their attention layers) gets its last layer as attention: the
    mask code and the generation cache need one."""
    types = getattr(config, "layer_types", None)
    layers = getattr(config, "num_hidden_layers", None)
    if "mamba_n_heads" not in vars(config) or not isinstance(layers, int):
        return
    if not isinstance(types, list) or set(types) != {"linear_attention"}:
        return
    layers = max(layers, 2)  # one layer of each kind at least
    try:
        if "attn_layer_indices" in vars(config):  # Bamba derives its layer types from these
            config.attn_layer_indices = [layers - 1]
        else:
            config.layer_types = ["linear_attention"] * (layers - 1) + ["full_attention"]
        config.num_hidden_layers = layers
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


ALIAS = re.compile(r"(dim|size|width|groups)$")  # groups: a depthwise convolution over the width (Mimi)
NOT_ALIAS = re.compile(r"vocab|position|image|patch|window|chunk|length|codebook|sampl|kernel|stride|bins|frames")


def _width_aliases(config: Any, values: dict[str, Any], old: int) -> None:
    """A second name for the model width, filled in from hidden_size by the config itself
    (xLSTM's embedding_dim): the shrunk width too, else the two disagree in forward."""
    new = width(config)
    if not old or new == old:
        return
    for key, value in list(vars(config).items()):
        if _stage_widths(key, value, old):  # per-stage widths from the model width (SAM 2's Hiera)
            try:
                setattr(config, key, type(value)(v * new // old for v in value))
            except (AttributeError, ValueError, TypeError):
                pass
            continue
        if key in values or type(value) is not int or value != old:
            continue
        if ALIAS.search(key) and (key.endswith("groups") or not NOT_ALIAS.search(key)):
            try:
                setattr(config, key, new)
            except (AttributeError, ValueError, TypeError):
                pass


STEM = re.compile(r"(hidden_size|_dim|_width)$")
NOT_STEM = re.compile(r"vocab|position|image|window|chunk|length|kernel|stride|bins|frames|head")


def _stem_width(config: Any, values: dict[str, Any], depths: dict[str, Any], old: int) -> None:
    """A stem width that doubles stage by stage up to the model width (CLAP's HTS-AT audio Swin:
    patch_embeds_hidden_size 96 x 2^(4 - 1) stages = hidden_size 768, which its projection
    reads) keeps doubling up to the shrunk width over the shrunk stages."""
    new = width(config)
    for key, before in depths.items():
        stages = getattr(config, key, None)
        if type(before) is not int or type(stages) is not int or before < 2 or stages < 1 or stages == before:
            continue
        staged = any(isinstance(v, (list, tuple)) and len(v) in (before, stages) for v in vars(config).values())
        for name, value in list(vars(config).items()):
            if name in values or type(value) is not int or value * 2 ** (before - 1) != old or value == old:
                continue
            if staged and STEM.search(name) and not NOT_STEM.search(name) and new % 2 ** (stages - 1) == 0:
                try:
                    setattr(config, name, new // 2 ** (stages - 1))
                except (AttributeError, ValueError, TypeError):
                    pass


def _stage_widths(key: str, value: Any, old: int) -> bool:
    """A per-stage list of widths that starts at the model width and grows from it (SAM 2's
    Hiera: hidden_size 96, embed_dim_per_stage [96, 192, 384, 768]): it follows the shrunk width."""
    if not isinstance(value, (list, tuple)) or len(value) < 2 or not all(type(v) is int for v in value):
        return False
    return value[0] == old and all(v % old == 0 for v in value) and ("dim" in key or "size" in key or "width" in key)


# Secondary widths a config may size as a multiple of the model width (Zamba2's attention takes
# the hidden state and the original embeddings side by side: twice the width).
MULTIPLES = ("attention_hidden_size",)


def _width_multiples(config: Any, before: dict[str, Any], old: int) -> None:
    """A secondary width the default sizes as 2-4 times the model width keeps that multiple."""
    new = width(config)
    for key, value in before.items():
        if type(value) is int and old and new != old and value != old and value % old == 0 and value // old <= 4:
            try:
                setattr(config, key, value // old * new)
            except (AttributeError, ValueError, TypeError):
                pass


def _layer_ids(config: Any) -> None:
    """Indices of one kind of layer the config derived from its layer types (Zamba2's
    hybrid_layer_ids) follow the shrunk layer types."""
    types = getattr(config, "layer_types", None)
    if not isinstance(types, list):
        return
    for key, value in list(vars(config).items()):
        kind = key.removesuffix("_layer_ids")
        if kind != key and isinstance(value, list) and kind in types:
            try:
                setattr(config, key, [i for i, t in enumerate(types) if t == kind])
            except (AttributeError, ValueError, TypeError):
                pass


LAYER_COUNT = re.compile(r"^num_\w+_layers$")


def _whole_depth(config: Any, old: Any, values: dict[str, Any]) -> None:
    """A count of layers of one kind that the default sets to the whole depth (Gemma 4's
    assistant shares the KV cache of all its layers: num_kv_shared_layers = num_hidden_layers)
    follows the shrunk depth."""
    new = getattr(config, "num_hidden_layers", None)
    if type(old) is not int or type(new) is not int or new == old:
        return
    for key, value in list(vars(config).items()):
        if LAYER_COUNT.match(key) and key not in values and type(value) is int and value == old:
            try:
                setattr(config, key, new)
            except (AttributeError, ValueError, TypeError):
                pass


def _stacked_depth(config: Any, old: Any, stack: Any) -> None:
    """A depth the default derives from its stacks (HRM: num_hidden_layers = num_layers_per_stack
    x H_cycles x (L_cycles + 1), its cache's slots) keeps that many stacks of the shrunk stack."""
    new = getattr(config, "num_layers_per_stack", None)
    if type(old) is int and type(stack) is int and type(new) is int and stack > new and old % stack == 0:
        try:
            config.num_hidden_layers = old // stack * new
        except (AttributeError, ValueError, TypeError):
            pass


def _patch_widths(config: Any, patch: Any) -> None:
    """Widths the config derived from the patch size when it was built (RADIO's patch_dim =
    channels x patch x patch, video_patch_dim = frames x that) follow the shrunk patch."""
    new = getattr(config, "patch_size", None)
    if type(patch) is not int or type(new) is not int or new == patch:
        return
    for key, value in list(vars(config).items()):
        if "patch" in key and key.endswith("_dim") and type(value) is int and value % (patch * patch) == 0:
            try:
                setattr(config, key, value // (patch * patch) * new * new)
            except (AttributeError, ValueError, TypeError):
                pass


EXPERT_COUNTS = ("num_experts", "num_local_experts", "n_routed_experts")


def _moe_top_k(config: Any, values: dict[str, Any]) -> None:
    """A default config with experts but its top-k left unset (DeepSeek-V2, dots.llm1: the
    checkpoints' configs set it): the shrunk top-k, else the router's topk() gets None."""
    experts = [getattr(config, k, None) for k in EXPERT_COUNTS]
    if "num_experts_per_tok" in vars(config) and config.num_experts_per_tok is None:
        if any(isinstance(n, int) and n > 1 for n in experts):
            config.num_experts_per_tok = min(int(values.get("num_experts_per_tok", 2)), *(n for n in experts if n))


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
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and rope and set(rope) <= set(types):  # rotary parameters per layer type (NeoMME)
        config.rope_parameters = {
            t: _sections(p, head_dim, factor, _code_sections(config)) if isinstance(p, dict) else p
            for t, p in rope.items()
        }
    else:
        config.rope_parameters = _sections(rope, head_dim, factor, _code_sections(config))


def _sections(rope: dict[str, Any], head_dim: int, factor: Any, code: tuple[int, ...] = ()) -> dict[str, Any]:
    """The shrunk sections: the last two equal (Qwen2-VL's (t, h, w) 16, 24, 24), or the first two
    where the config names none and the modeling code's own default has its first two equal (ERNIE
    4.5 VL: `.get("mrope_section", [22, 22, 20])`, (h, w, t), stacking h with w: they must match)."""
    half = int(head_dim * float(rope.get("partial_rotary_factor") or factor)) // 2
    third = half // 3
    default = code if not rope.get("mrope_section") else ()
    if len(default) == 3 and default[0] == default[1] != default[2]:
        return {**rope, "mrope_section": [third, third, half - 2 * third]}
    return {**rope, "mrope_section": [half - 2 * third, third, third]}


CODE_SECTIONS = re.compile(r"""get\(\s*["']mrope_section["']\s*,\s*\[(\d+),\s*(\d+),\s*(\d+)\]""")


@functools.cache
def _module_sections(module: str) -> tuple[int, ...]:
    import importlib

    try:
        match = CODE_SECTIONS.search(inspect.getsource(importlib.import_module(module)))
    except (ImportError, OSError, TypeError):
        return ()
    return tuple(int(v) for v in match.groups()) if match else ()


def _code_sections(config: Any) -> tuple[int, ...]:
    """The rotary sections the modeling code falls back to where the config names none."""
    module = type(config).__module__
    return _module_sections(module.replace(".configuration_", ".modeling_")) if ".configuration_" in module else ()


# Keys a default config may leave unset (None) that the checkpoints' configs set, filled in the
# repair pass (REPAIRS): the shrunk values, and these beside them.
UNSET: dict[str, Any] = {
    "top_k_experts": 2,
    "n_shared_experts": 1,  # dots.llm1 multiplies its shared experts' width by it
    "clip_qkv": 8,  # DBRX clamps its projections by +-clip_qkv, None or not (its checkpoints: 8)
}
ROPE_THETA = 10_000.0  # the rotary base where a default config names none


def _unset_values(config: Any, values: dict[str, Any]) -> None:
    """A key the default config leaves None where the checkpoints set it (dots.llm1's experts
    and top-k, DiffusionGemma's experts): the shrunk value. Only in the repair pass: elsewhere
    a None may mean "none of these" (a dense model)."""
    known = {**UNSET, **values}
    for key, value in list(vars(config).items()):
        if value is None and type(known.get(key)) is int:
            try:
                setattr(config, key, known[key])
            except (AttributeError, ValueError, TypeError):
                pass
    _moe_top_k(config, values)


def _attention_layer_types(config: Any) -> list[str]:
    """The layer types of a config whose layers are attention layers of some kind (a ResNet-style
    backbone's "basic" and "bottleneck" stages are not), else []."""
    types = vars(config).get("layer_types")
    if not isinstance(types, list) or not any("attention" in str(t) for t in types):
        return []
    return [str(t) for t in types]


def _rope_per_layer_type(config: Any) -> None:
    """A config with layer types and no rotary parameters at all (Cohere Compass: the modeling
    code reads rope_parameters[layer_type]): the default rotation for every layer type."""
    types = _attention_layer_types(config)
    if not types or getattr(config, "rope_parameters", None) or getattr(config, "rope_theta", None):
        return
    rope_type = getattr(config, "default_rope_type", None) or "default"
    try:
        config.rope_parameters = {t: {"rope_type": rope_type, "rope_theta": ROPE_THETA} for t in dict.fromkeys(types)}
    except (AttributeError, ValueError, TypeError):
        pass


SLIDING_WINDOW = 4  # half the text: the window is exercised


def _sliding_window(config: Any) -> None:
    """A sliding window left unset (Step3p7 builds its sliding mask, bidirectional overlay and all,
    whatever its layer types): a window of half the text."""
    if _attention_layer_types(config) and vars(config).get("sliding_window", 0) is None:
        try:
            config.sliding_window = SLIDING_WINDOW
        except (AttributeError, ValueError, TypeError):
            pass


# How a model names the tokenizer's image tokens in its vocabulary map, by model_type (per VQ code).
IMAGE_TOKEN_NAMES: dict[str, Any] = {
    "chameleon": lambda code: "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z",
    "emu3": lambda code: f"<|visual token{code:06d}|>",
}
# The map's other entries its model reads: the image placeholder, Emu3's end of an image row.
MAP_TOKENS = ("<image>", "<|extra_200|>")


def _vocabulary_map(config: Any) -> None:
    """A vocabulary map left unset (Chameleon, Emu3: the checkpoint's tokenizer fills it): the
    placeholder tokens and one token per VQ code at the top of the vocabulary, above the ids the
    harness draws for text."""
    name = IMAGE_TOKEN_NAMES.get(getattr(config, "model_type", ""))
    vq = getattr(config, "vq_config", None)
    codes = getattr(vq, "num_embeddings", None) or getattr(vq, "codebook_size", None)
    text = getattr(config, "text_config", None) or config
    vocab = getattr(text, "vocab_size", None)
    if name is None or "vocabulary_map" not in vars(config) or config.vocabulary_map is not None:
        return
    if type(codes) is not int or type(vocab) is not int or vocab < codes + len(MAP_TOKENS) + 100:
        return
    first = vocab - codes - len(MAP_TOKENS)
    mapping = {token: vocab - 1 - i for i, token in enumerate(MAP_TOKENS)}
    config.vocabulary_map = {**mapping, **{name(code): first + code for code in range(codes)}}
    if "image_token_id" in vars(config):
        config.image_token_id = mapping["<image>"]


def _own_sub_configs(config: Any) -> None:
    """A sub-config the default fills in differently from the config's own default for one
    given empty (`{}`): the latter, as a checkpoint's config (which names the sub-config) gets it.
    transformers 5.17: DiffusionGemma's default leaves its vision config None (the model builds
    its vision tower anyway) and Granite 4 Vision's default text config is Llama's (its attention
    reads Granite's attention_multiplier), where `{}` gives Gemma 4's vision config and Granite 4
    Vision's own text config."""
    keys = [k for k in (getattr(type(config), "sub_configs", None) or {}) if k in vars(config)]
    for key in keys:
        current = vars(config)[key]
        try:
            given = vars(type(config)(**{key: {}})).get(key)
        except Exception:  # a config that cannot be built with only this argument: left alone
            continue
        if given is not None and type(given) is not type(current):
            try:
                setattr(config, key, given)
            except (AttributeError, ValueError, TypeError):
                pass


# The repair pass (tiny_config(repair=True), tried where the plain shrink cannot be built): what a
# default config leaves unset that a real checkpoint's config sets.
REPAIRS = (_rope_per_layer_type, _sliding_window, _vocabulary_map, _own_sub_configs)


def _shrink(config: Any, values: dict[str, Any], depth: int = 0, mrope: bool = False, repair: bool = False) -> None:

    per_layer = _homogenize(config, values)
    depths = {key: getattr(config, key, None) for key in DEPTH_KEYS}
    old_width = width(config)
    heads = (getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None))
    before = {k: v for k, v in vars(config).items() if k in MULTIPLES}
    patch = getattr(config, "patch_size", None)
    stack = getattr(config, "num_layers_per_stack", None)
    grid = _grid(config)
    channels = vars(config).get("upsample_initial_channel")
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
    _vocoder_channels(config, channels)
    _codec_stages(config, values)
    _width_aliases(config, values, old_width)
    _stem_width(config, values, depths, old_width)
    _width_multiples(config, before, old_width)
    _image_grid(config, values, grid)
    _video_clip(config, values)
    _prefixed_towers(config, values)
    _layer_ids(config)
    _whole_depth(config, depths.get("num_hidden_layers"), values)
    _stacked_depth(config, depths.get("num_hidden_layers"), stack)
    _patch_widths(config, patch)
    if isinstance(heads[0], int) and heads[0] == heads[1] and "num_key_value_heads" in values:
        # a default config without grouped KV heads: the modeling code may size keys as the width (ESM C)
        try:
            config.num_key_value_heads = config.num_attention_heads
        except (AttributeError, ValueError, TypeError):
            pass
    if _per_stage_lists(config, depths, backbone=depth > 0) and isinstance(patch, int):
        config.patch_size = min(patch, config.patch_size)  # every kept stage halves the image: small patches
    _consistent_heads(config)
    _hybrid_attention(config)
    _moe_top_k(config, values)
    _hash_buckets(config)
    if repair:
        _unset_values(config, values)
        for fix in REPAIRS:
            fix(config)
    for key, value in OVERRIDES.get(getattr(config, "model_type", ""), {}).items():
        setattr(config, key, copy.deepcopy(value))
    if per_layer:
        layers = int(getattr(config, "num_hidden_layers", None) or 0)
        config.per_layer_config = {idx: o for idx, o in per_layer.items() if idx < layers} or None
    if mrope or "mrope_section" in (getattr(type(config), "ignore_keys_at_rope_validation", None) or ()):
        _mrope(config)
    if depth < 3:
        subs = _subs(config)
        widths = {k: _safe_width(v) for k, v in subs.items()}
        lists = {k: _int_lists(v) for k, v in subs.items()}
        channels = {k: _stage_channels(v) for k, v in subs.items()}
        for sub in subs.values():
            _shrink(sub, values, depth + 1, mrope, repair)
        _neck_outputs(subs, widths)
        _joint_widths(config, values, subs, old_width, widths)
        _factor_widths(config, subs, widths)
        _copied_lists(config, subs, lists)
        _backbone_channels(config, subs, channels)
        _tower_widths(config)
        _parent_widths(config, subs, widths, values)


JOINT = re.compile(r"(_dim|_size)$")
NOT_JOINT = re.compile(r"feedforward|ffn|intermediate|hidden_dim|mlp")  # a layer's own width (Mask2Former's 1024)


def _joint_widths(config: Any, values: dict[str, Any], subs: dict[str, Any], old: int, before: dict[str, int]) -> None:
    """A width the default sets to the config's width plus a sub-config's (XCodec2 quantizes its
    acoustic and semantic features side by side: quantization_dim 2048 = 1024 + its semantic
    encoder's 1024) follows their shrunk sum."""
    new = _safe_width(config)
    for key, value in list(vars(config).items()):
        if key in values or type(value) is not int or not JOINT.search(key) or NOT_JOINT.search(key) or not old:
            continue
        for name, was in before.items():
            total = new + _safe_width(subs[name])
            if was and value == old + was and total != value:
                try:
                    setattr(config, key, total)
                except (AttributeError, ValueError, TypeError):
                    pass
                break


NOT_FACTOR = re.compile(r"layers|heads|token|id|size|dim|vocab|experts|group|length|window")


def _factor_widths(config: Any, subs: dict[str, Any], before: dict[str, int]) -> None:
    """A tower whose default width is another tower's times a factor the config names (BLT's
    global transformer: 2048 = its local encoder's 1024 x cross_attn_k 2, the patch embeddings it
    reads) keeps that product of the shrunk widths; its heads keep their count and its head size
    is the width over them (BLT's attention derives it so; its rotary reads head_dim)."""
    factors = {v for k, v in vars(config).items() if type(v) is int and 2 <= v <= 8 and not NOT_FACTOR.search(k)}
    for name, sub in subs.items():
        for other, was in before.items():
            old = before.get(name, 0)
            factor = old // was if was and other != name and old % was == 0 else 0
            new = _safe_width(subs[other]) * factor
            if (
                factor not in factors
                or not new
                or _safe_width(sub) == new
                or type(vars(sub).get("hidden_size")) is not int
            ):
                continue
            heads, head = vars(sub).get("num_attention_heads"), vars(sub).get("head_dim")
            sub.hidden_size = new
            if type(heads) is int and type(head) is int and heads and new % heads == 0:
                sub.head_dim = new // heads
            break


def _stage_channels(config: Any) -> tuple[int, ...]:
    """The channels of a backbone's output stages (out_indices, stage 0 the stem): its per-stage
    hidden_sizes, else a width that doubles stage by stage from embed_dim (Swin); () if neither."""
    indices, widths = vars(config).get("_out_indices"), vars(config).get("hidden_sizes")
    embed, depths = vars(config).get("embed_dim"), vars(config).get("depths")
    if not isinstance(indices, (list, tuple)) or not all(type(i) is int and i > 0 for i in indices):
        return ()
    if isinstance(widths, (list, tuple)) and _ints(widths) and max(indices) <= len(widths):
        return tuple(int(widths[i - 1]) for i in indices)
    if type(embed) is int and isinstance(depths, (list, tuple)) and max(indices) <= len(depths):
        return tuple(embed * 2 ** (i - 1) for i in indices)
    return ()


def _backbone_channels(config: Any, subs: dict[str, Any], before: dict[str, tuple[int, ...]]) -> None:
    """A list of a backbone's output channels the config holds for the layers that read them
    (OmDet-Turbo's encoder_in_channels: its Swin's stages 2-4, 192, 384, 768) follows the
    backbone's shrunk stages."""
    for key, value in list(vars(config).items()):
        if not isinstance(value, (list, tuple)) or not _ints(value):
            continue
        for name, was in before.items():
            new = _stage_channels(subs[name])
            if was and tuple(value) == was and len(new) == len(was) and new != was:
                try:
                    setattr(config, key, type(value)(new))
                except (AttributeError, ValueError, TypeError):
                    pass


def _int_lists(config: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in vars(config).items() if isinstance(v, (list, tuple)) and _ints(v)}


def _ints(value: Any) -> bool:
    return len(value) > 1 and all(type(v) is int for v in value)


def _copied_lists(config: Any, subs: dict[str, Any], before: dict[str, dict[str, tuple[int, ...]]]) -> None:
    """A list a config copies from its sub-config, in order or reversed (SAM 2's neck: its
    backbone_channel_list is the Hiera's embed_dim_per_stage reversed), follows the sub-config's
    shrunk list."""
    for key, value in list(vars(config).items()):
        if not isinstance(value, (list, tuple)) or not _ints(value):
            continue
        for name, old in before.items():
            for sub_key, was in old.items():
                new = tuple(getattr(subs[name], sub_key, None) or ())
                if len(new) != len(was) or new == was or len(set(was)) < 2:
                    continue
                for order in (1, -1):
                    if tuple(value) == was[::order]:
                        try:
                            setattr(config, key, type(value)(new[::order]))
                        except (AttributeError, ValueError, TypeError):
                            pass


def _side(config: Any) -> int:
    size = vars(config).get("image_size")
    size = size[0] if isinstance(size, (list, tuple)) and size else size
    return size if type(size) is int else 0


def _scales(config: Any, depth: int = 0) -> dict[str, tuple[int, int]]:
    """Every (sub-)config's patch grid and image side by its path, before shrinking (a config
    may set its backbone's image size through a property: SAM 3's vision config)."""
    out = {"": (_grid(config), _side(config))}
    for key, sub in _subs(config).items() if depth < 3 else ():
        out.update({f"{key}.{path}".rstrip("."): v for path, v in _scales(sub, depth + 1).items()})
    return out


def _subs(config: Any) -> dict[str, Any]:
    """The config's sub-configs by attribute name."""
    from transformers import PretrainedConfig

    return {k: v for k, v in list(vars(config).items()) if isinstance(v, PretrainedConfig)}


def _last_feature_size(config: Any) -> int:
    value = next((v for k, v in vars(config).items() if k.endswith("feature_sizes") and isinstance(v, list)), None)
    last = value[-1] if value else None
    return last[0] if isinstance(last, (list, tuple)) and last and type(last[0]) is int else 0


def _feature_sizes(config: Any, before: dict[str, tuple[int, int]], path: str = "", depth: int = 0) -> None:
    """Feature map sizes a config lists for its backbone's levels (SAM 2 / SAM 3 tracker:
    backbone_feature_sizes [[256, 256], [128, 128], [64, 64]] of a 1024-pixel image) follow the
    backbone's shrunk patch grid, else its shrunk image side."""
    subs = _subs(config)
    for key, value in list(vars(config).items()):
        if not key.endswith("feature_sizes") or not isinstance(value, list) or not value:
            continue
        if not all(isinstance(v, (list, tuple)) and _ints(v) for v in value):
            continue
        for name, sub in subs.items():
            grid, side = before.get(f"{path}{name}", (0, 0))
            old, new = (grid, _grid(sub)) if grid else (side, _side(sub))
            if old and new and new != old:
                setattr(config, key, [type(v)(max(1, x * new // old) for x in v) for v in value])
                break
    if depth < 3:
        lasts = {name: _last_feature_size(sub) for name, sub in subs.items()}
        for name, sub in subs.items():
            _feature_sizes(sub, before, f"{path}{name}.", depth + 1)
        for name, old_last in lasts.items():
            new_last = _last_feature_size(subs[name])
            if not old_last or not new_last or new_last == old_last:
                continue
            for other, sub in subs.items():  # a sibling's patch grid matched the smallest level
                side = _side(sub)
                if other != name and before.get(f"{path}{other}", (0, 0))[0] == old_last and side % new_last == 0:
                    sub.patch_size = side // new_last  # (SAM 2's prompt encoder: 1024 // 16 = 64)


TOWER_WIDTH = re.compile(r"^(?:(\w+)_hidden_size|hidden_size_(\w+))$")  # audio_hidden_size; BLT's hidden_size_global


def _tower_widths(config: Any) -> None:
    """A width named after a sibling tower (`audio_hidden_size` beside `audio_config`, in the
    config or one of its sub-configs: Nemotron 3 diarization's head) is that tower's shrunk width."""
    from transformers import PretrainedConfig

    subs = [v for v in vars(config).values() if isinstance(v, PretrainedConfig)]
    for cfg in (config, *subs):
        for key, value in list(vars(cfg).items()):
            match = TOWER_WIDTH.match(key)
            tower = getattr(config, f"{match.group(1) or match.group(2)}_config", None) if match else None
            new = getattr(tower, "hidden_size", None) if isinstance(tower, PretrainedConfig) else None
            if type(value) is int and type(new) is int and new != value:
                try:
                    setattr(cfg, key, new)
                except (AttributeError, ValueError, TypeError):
                    pass


def _parent_widths(config: Any, subs: dict[str, Any], before: dict[str, int], values: dict[str, Any]) -> None:
    """A composite config with no width of its own that sizes its own modules by its towers' width
    (SAM 2 video's memory attention, memory encoder, mask downsampler and fuser: 256, the mask
    decoder's and prompt encoder's width): a width key (ALIAS: `mask_downsampler_embed_dim` too) equal to the
    default width that two or more sub-configs share follows their shrunk width (one tower's
    width alone is no shared model width: CLIP's projection_dim matches its text tower's)."""
    if _safe_width(config):
        return
    shared: dict[int, set[int]] = {}
    for name, old in before.items():
        if old:
            shared.setdefault(old, set()).add(_safe_width(subs[name]))
    for key, value in list(vars(config).items()):
        if key in values or type(value) is not int or not ALIAS.search(key) or "intermediate" in key:
            continue
        olds = [n for n, old in before.items() if old == value]
        news = shared.get(value, set())
        if len(olds) >= 2 and len(news) == 1 and (new := next(iter(news))) and new != value:
            try:
                setattr(config, key, new)
            except (AttributeError, ValueError, TypeError):
                pass


def _safe_width(config: Any) -> int:
    try:
        return width(config)
    except (TypeError, ValueError):
        return 0


# Sizes one tower holds for the towers that read its output, as a fraction of their width:
# SAM's vision neck outputs the prompt encoder's and mask decoder's width (output_channels 256)
# and its positional encoding has half of it per coordinate (num_pos_feats 128).
NECK = {"output_channels": 1, "num_pos_feats": 2}


def _neck_outputs(subs: dict[str, Any], before: dict[str, int]) -> None:
    """A tower's neck sized for another tower's width (NECK) follows that tower's shrunk width."""
    for name, sub in subs.items():
        for key, value in list(vars(sub).items()):
            if key not in NECK or type(value) is not int:
                continue
            for other, old in before.items():
                new = _safe_width(subs[other]) // NECK[key]
                if other != name and old // NECK[key] == value and new and new != value:
                    setattr(sub, key, new)
                    break


def _grid(config: Any) -> int:
    """Image embeddings per side (image size // patch size), 0 when the config names neither."""
    size, patch = vars(config).get("image_size"), vars(config).get("patch_size")
    return size // patch if type(size) is int and type(patch) is int and patch > 0 else 0


def _image_grid(config: Any, values: dict[str, Any], old: int) -> None:
    """A size the config derived from its image and patch sizes (SAM's prompt encoder:
    image_embedding_size 1024 // 16 = 64) follows the shrunk ones; left at 64 against 4 image
    embeddings per side, no shrunk SAM ran and its unshrunk default (1024 pixels) took 60 s+."""
    new = _grid(config)
    if not old or new == old:
        return
    for key, value in list(vars(config).items()):
        if key.endswith("embedding_size") and key not in values and type(value) is int and value == old:
            setattr(config, key, new)


# A video clip's frames: two tubelets (V-JEPA 2 defaults to 64 frames of 256 pixels, 32,768
# patches a clip: 60 s+ per forward pass on cpu).
CLIP_FRAMES = ("frames_per_clip",)


def _video_clip(config: Any, values: dict[str, Any]) -> None:
    """A config that sizes its images by crop_size (and names no image_size) gets the shrunk
    image side there; its clip keeps two tubelets of frames."""
    side = values.get("image_size")
    if type(vars(config).get("crop_size")) is int and "image_size" not in vars(config) and side:
        config.crop_size = side
    tubelet = vars(config).get("tubelet_size")
    for key in CLIP_FRAMES:
        if type(vars(config).get(key)) is int and "image_size" in values:
            setattr(config, key, 2 * (tubelet if type(tubelet) is int and tubelet > 0 else 1))


TOWER_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _prefixed_towers(config: Any, values: dict[str, Any]) -> None:
    """A second transformer described inline by prefixed scale keys (V-JEPA 2's predictor:
    pred_hidden_size, pred_num_hidden_layers, pred_num_attention_heads; X-CLIP's mit_*) is
    shrunk like the first; only where width, depth and heads are all there."""
    keys = vars(config)
    prefixes = {k[: -len("_hidden_size")] for k in keys if k.endswith("_hidden_size") and k != "hidden_size"}
    for prefix in sorted(prefixes):
        named = {k: f"{prefix}_{k}" for k in TOWER_KEYS}
        if not all(type(keys.get(named[k])) is int for k in TOWER_KEYS[:3]):
            continue
        for key, name in named.items():
            if type(keys.get(name)) is int and key in values and name not in values:
                setattr(config, name, values[key])


# A default config its own validator refuses, naming the one value it accepts ("hidden_size_per_
# layer_input must be 0, got 256": Gemma 4's assistant on 5.25) is built with that value.
MUST_BE = re.compile(r"\b([a-z_]\w*) must be (-?\d+|True|False), got\b")
MAX_REPAIRS = 4  # repairs (MUST_BE, repair_from_error) tried on one config before giving up


def default_config(model_type: str, config_class: Any = None, overrides: dict[str, Any] | None = None) -> Any:
    """The class's own default config (with the CONSTRUCT arguments it cannot be built without)."""
    from transformers import AutoConfig

    overrides = overrides if overrides is not None else copy.deepcopy(CONSTRUCT.get(model_type, {}))
    if _timm_default(model_type, config_class):
        overrides.setdefault("use_timm_backbone", False)
    for _ in range(MAX_REPAIRS):
        try:
            if config_class is not None and getattr(config_class, "model_type", None) == model_type:
                config = config_class(**overrides)
            else:
                config = AutoConfig.for_model(model_type, **overrides)
            break
        except Exception as exc:
            named = MUST_BE.search(str(exc))  # its validator names the value (Gemma 4's assistant)
            if named is not None and _construct_with(config_class, model_type, overrides, *named.groups()):
                continue
            if not _documented_subs(config_class, model_type, overrides):  # a composite without defaults
                raise
    else:
        raise ValueError(f"the default config of {model_type!r} refuses {MAX_REPAIRS} values its validator named")
    own = _own_backbone(config)
    if own is not None:  # built again around it: what the config derives from its backbone follows
        return default_config(model_type, config_class, {**overrides, "backbone_config": own})
    return config


# A docstring example's sub-config: `>>> config_encoder = BertConfig()` (its name, its class).
DOC_SUB_CONFIG = re.compile(r">>> (?:config_)?(\w+?)(?:_config)? = (\w+Config)\(\)")


def _documented_subs(config_class: Any, model_type: str, overrides: dict[str, Any]) -> bool:
    """A composite config that has no defaults (`has_no_defaults_at_init`: transformers 5.17's
    encoder-decoder, speech encoder-decoder and vision-text dual encoder refuse to be built without
    both sub-configs) gets the sub-configs its own docstring example builds (`config_encoder =
    BertConfig()`, `config_vision = ViTConfig()`), by the sub-config key they name; False where
    none is named or all are given already."""
    import transformers
    from transformers import CONFIG_MAPPING

    cls = config_class if getattr(config_class, "model_type", None) == model_type else CONFIG_MAPPING[model_type]
    keys = getattr(cls, "sub_configs", None) or {}
    if not getattr(cls, "has_no_defaults_at_init", False) or not keys:
        return False
    added = False
    for name, sub_name in DOC_SUB_CONFIG.findall(cls.__doc__ or ""):
        key = next((k for k in (name, f"{name}_config") if k in keys), None)
        sub = getattr(transformers, sub_name, None)
        if key is None or key in overrides or sub is None:
            continue
        overrides[key] = sub().to_dict()
        added = True
    return added


def _construct_with(config_class: Any, model_type: str, overrides: dict[str, Any], key: str, value: str) -> bool:
    """The value a validator named, as an argument of the config or of the sub-config that
    declares it (Gemma 4's assistant: its text config's); False where it was given already."""
    from transformers import CONFIG_MAPPING

    cls = config_class if getattr(config_class, "model_type", None) == model_type else CONFIG_MAPPING[model_type]
    named: Any = int(value) if value not in ("True", "False") else value == "True"
    target = overrides
    if key not in getattr(cls, "__dataclass_fields__", {}):
        for name, spec in (getattr(cls, "sub_configs_defaults", None) or {}).items():
            sub_type = str(getattr(spec, "model_type", None) or "")
            sub = getattr(spec, "config_class", None)
            sub = CONFIG_MAPPING[sub_type] if sub_type in CONFIG_MAPPING else sub  # AutoConfig: the default type's
            if key in getattr(sub, "__dataclass_fields__", {}):
                kwargs = {**(getattr(spec, "init_kwargs", None) or {}), "model_type": sub_type} if sub_type else {}
                target = overrides.setdefault(name, {k: v for k, v in kwargs.items() if v is not None})
                break
    if not isinstance(target, dict) or target.get(key) == named:
        return False
    target[key] = named
    return True


@functools.cache
def _timm_default(model_type: str, config_class: Any) -> bool:
    """A config that builds a timm backbone unless told `use_timm_backbone=False` (DETR-style
    detectors, MaskFormer, OmDet-Turbo): transformers' own backbone instead (timm is not
    installed: workers.tiny.NOT_INSTALLED)."""
    from transformers import CONFIG_MAPPING

    cls = config_class if getattr(config_class, "model_type", None) == model_type else None
    try:
        cls = cls or CONFIG_MAPPING[model_type]
        # the config reads the switch itself; where only its docstring names it (transformers'
        # shared backbone helper reads it), False makes it ask the Hub for its backbone's config
        return '"use_timm_backbone"' in inspect.getsource(inspect.getmodule(cls))  # type: ignore[arg-type]
    except (KeyError, OSError, TypeError):
        return False


def _own_backbone(config: Any) -> Any:
    """For a default config whose backbone is a timm one by name (DETR-style detectors whose
    config has no use_timm_backbone switch of its own; timm is not installed), transformers' own
    config of that architecture: the longest model type the timm name starts with (resnet50:
    resnet), its deepest stages as many as the timm config's out_indices. None otherwise."""
    from transformers import CONFIG_MAPPING

    timm = getattr(config, "backbone_config", None)
    name = str(getattr(timm, "backbone", "") or "")
    if getattr(timm, "model_type", None) != "timm_backbone" or not name:
        return None
    types = sorted((t for t in CONFIG_MAPPING if name.startswith(t) and t != "timm_backbone"), key=len)
    if not types:
        return None
    own: Any = CONFIG_MAPPING[types[-1]]
    try:
        stages = list(getattr(own(), "stage_names", None) or ())[1:]  # the stem is no stage
        count = len(getattr(timm, "out_indices", None) or ())
        return own(out_features=stages[-count:]) if 0 < count <= len(stages) else own()
    except (AttributeError, ValueError, TypeError):
        return None


def tiny_config(
    model_type: str,
    values: dict[str, Any] = SHRINK,
    config_class: Any = None,
    mrope: bool = False,
    repair: bool = False,
) -> Any:
    try:
        config = default_config(model_type, config_class)
        scales = _scales(config)
        _shrink(config, values, mrope=mrope, repair=repair)
        _feature_sizes(config, scales)
        _derived_sizes(config)
    except Exception as exc:
        raise Unsupported(f"config for {model_type!r}: {type(exc).__name__}: {exc}") from None
    return config


def _derived_sizes(config: Any) -> None:
    """A config whose image_size is a property that derives other sizes from it (SAM 3 tracker
    video: its backbone's feature sizes and memory attention's rotary grid, from the image side
    and the backbone's patch) is set its image size again once every sub-config is shrunk: the
    shrinker set it before the patch shrank, and the config's own derivation then read the
    default patch. Parents first (SAM 3 video's image size sets its tracker's)."""
    size = getattr(type(config), "image_size", None)
    if isinstance(size, property) and size.fset is not None:
        try:
            config.image_size = config.image_size
        except (AttributeError, ValueError, TypeError):
            pass


def width(config: Any) -> int:
    """The model width: its largest width key (a per-stage list of widths counts by its last,
    widest stage: Florence-2's DaViT embed_dim)."""
    values = [getattr(config, k, 0) for k in ("hidden_size", "d_model", "n_embd", "dim", "embed_dim")]
    return max(int((v[-1] if isinstance(v, (list, tuple)) and v else v) or 0) for v in values)


MISSING_ATTRIBUTE = re.compile(r"'(\w+)' object has no attribute '(\w+)'")
DIVISIBLE = re.compile(r"\((\d+)\) must be divisible by (\w+) \((\d+)\)")


def repair_from_error(config: Any, exc: BaseException) -> bool:
    """A config the model refused while it was being built, made consistent where the error says
    how (True then: build it again):
    - a (sub-)config lacking an attribute the model reads (DBRX's attention config: rope_theta;
      Moonshine Streaming: num_key_value_heads; T5Gemma 2's text config: dropout_rate) gets the
      value of the nearest config around it that has one (an enclosing config, its rotary
      parameters, then the configs inside);
    - a class that asserts `is_decoder=True` (Reformer's LM head) gets it;
    - a width that must be divisible by a number of heads (Perceiver's cross-attention over its
      Fourier features: 261 channels, 8 heads): heads set to their greatest common divisor."""
    text = str(exc)
    if "is_decoder=True" in text and getattr(config, "is_decoder", None) is False:
        config.is_decoder = True
        return True
    match = MISSING_ATTRIBUTE.search(text)
    if isinstance(exc, AttributeError) and match:
        return _inherit(config, match.group(1), match.group(2))
    match = DIVISIBLE.search(text)
    if isinstance(exc, ValueError) and match:
        return _divide_heads(config, int(match.group(1)), int(match.group(3)))
    return False


def config_tree(config: Any, chain: tuple[Any, ...] = ()) -> list[tuple[Any, tuple[Any, ...]]]:
    """Every config in the tree with the configs enclosing it (outermost first)."""
    found = [(config, chain)]
    for value in _subs(config).values() if len(chain) < 4 else ():
        found += config_tree(value, (*chain, config))
    return found


def _inherit(config: Any, class_name: str, key: str) -> bool:
    for cfg, chain in config_tree(config):
        if type(cfg).__name__ != class_name or key in vars(cfg):
            continue
        inner = [c for c, _ in config_tree(cfg)[1:]]
        for source in (*reversed(chain), *inner, *_declaring(cfg, key)):
            rope = vars(source).get("rope_parameters")
            value = vars(source).get(key, rope.get(key) if isinstance(rope, dict) else None)
            if value is not None:
                try:
                    setattr(cfg, key, copy.deepcopy(value))
                except (AttributeError, ValueError, TypeError):
                    object.__setattr__(cfg, key, copy.deepcopy(value))  # a strict config refuses unknown fields
                return True
    return False


def _declaring(config: Any, key: str) -> list[Any]:
    """Default configs of the config classes of the same model that declare `key` (T5Gemma 2's
    encoder alone: the encoder-decoder config declares the dropout_rate it hands its text config)."""
    from transformers import PretrainedConfig

    module = inspect.getmodule(type(config))
    found = []
    for cls in vars(module).values() if module else ():
        if (
            isinstance(cls, type)
            and issubclass(cls, PretrainedConfig)
            and key in getattr(cls, "__dataclass_fields__", {})
        ):
            try:
                found.append(cls())
            except Exception:  # a config that cannot be built by default declares nothing usable
                continue
    return found


def _divide_heads(config: Any, channels: int, heads: int) -> bool:
    import math

    fixed = False
    for cfg, _ in config_tree(config):
        for key, value in list(vars(cfg).items()):
            if "heads" in key and type(value) is int and value == heads:
                setattr(cfg, key, math.gcd(channels, heads))
                fixed = True
    return fixed
