"""Seeded dummy inputs for any model, made per modality from its `main_input_name`, its
forward signature and its config; the plans an architecture job tries in order."""

from __future__ import annotations

import copy
import inspect
import re
import sys
from typing import Any

import torch

from workers.tiny import SEED, Unsupported

BATCH, SEQ = 2, 8
WAVEFORM = 1600  # samples of a waveform input
MEL_FRAMES = 64  # mel frames of a features input laid out time first


def _get(config: Any, *keys: str, default: Any = None) -> Any:
    subs = ("vision_config", "audio_config", "encoder_config")
    for cfg in (config, *(getattr(config, sub, None) for sub in subs)):
        for key in keys:
            value = getattr(cfg, key, None) if cfg is not None else None
            if value is not None:
                return value
    return default


def _deep_get(config: Any, *keys: str, depth: int = 0) -> Any:
    """The first of the keys any nested sub-config sets (Nemotron 3.5's mel bins are in its
    audio config's speech-recognition config), breadth first."""
    from transformers import PretrainedConfig

    subs = [v for v in vars(config).values() if isinstance(v, PretrainedConfig)]
    for sub in subs:
        value = next((getattr(sub, k) for k in keys if getattr(sub, k, None) is not None), None)
        if value is not None:
            return value
    if depth < 2:
        return next((v for v in (_deep_get(sub, *keys, depth=depth + 1) for sub in subs) if v is not None), None)
    return None


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
# "placeholders" is "paired" with the text made as a processor makes it for a vision-language
# model that puts its image features in place of placeholder tokens (BLIP-2, InstructBLIP,
# Kosmos-2): one placeholder per image feature, ahead of the text.
PLANS = ("main", "paired", "placeholders", "channels_last", "frames")
PLACEHOLDERS = PLANS[2]
CHANNELS_LAST = PLANS[3]  # the other layout: features (batch, time, bins), waveform (batch, 1, samples), whole patches
FRAMES = PLANS[4]  # pixel_values as frames (batch, frames, channels, height, width): video models, image pairs
# Config keys that give the number of image features a query-token model puts in the text.
QUERY_COUNTS = ("num_query_tokens", "latent_query_num")
IMAGE_TOKENS = ("image_token_id", "image_token_index")
VIDEO_TOKENS = ("video_token_id", "video_token_index")
MASKS = ("attention_mask", "qformer_attention_mask", "decoder_attention_mask")
# Optional inputs the paired plan also gives by their documented shape: a second modality's
# features the model cannot run without (LXMERT's visual features and positions; the
# Q-Former's image features for its cross-attention).
DOCUMENTED_PAIRS = ("visual_feats", "visual_pos", "encoder_hidden_states")
WIDTHS = ("dim", "hidden_dim", "embed_dim", "embedding_dim", "hidden_size", "d_model")  # the model width
PACKED = ("grid_thw", "image_grid_thw")  # Qwen2-VL-style vision towers: flat patches and a grid


def make_inputs(model: Any, device: torch.device, task: str = "", plan: str | None = None) -> dict[str, Any]:
    """Seeded dummy inputs for the model's main input, what its forward requires, and for
    plan "paired" the other modality too."""
    config = model.config
    plan = plan or str(getattr(model, "fleet_inputs", PLANS[0]))
    params = inspect.signature(model.forward).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty and p.kind <= p.KEYWORD_ONLY]
    required = [n for n in required if n != "self"]
    main = _main_input(model, params, required)
    g = torch.Generator().manual_seed(SEED)
    maker = _Maker(model, g, plan)
    inputs: dict[str, Any] = {}
    if any(p in params for p in PACKED) and (main in ("hidden_states", "pixel_values") or "hidden_states" in required):
        inputs.update(maker.packed(params))
    elif main == "pixel_values" and {"spatial_shapes", "pixel_attention_mask"} <= set(params):
        inputs.update(maker.naflex())
    elif main == "pixel_values" and "pixel_position_ids" in params:
        inputs.update(maker.positioned())
    elif main == "pixel_values" and "target_sizes" in params:
        inputs.update(maker.strip())
    elif main in maker.kinds:
        inputs[main] = maker.kinds[main]()
    elif (made := maker.documented(main)) is not None:
        inputs[main] = made
        if plan == "paired":  # and its documented companions (Decision Transformer: actions, returns, timesteps)
            inputs.update(maker.companions(params))
    elif (made := maker.first_layer(main)) is not None:
        inputs[main] = made
    elif (session := maker.session(main, params, device)) is not None:
        inputs.update(session)
    elif (made := maker.expert(main)) is not None:
        inputs[main] = made
    else:
        raise Unsupported(f"main input {main!r} is not an input kind the harness makes yet", any_config=True)
    for name in sorted(required, key=lambda n: n.endswith("_attention_mask")):  # masks after their ids
        if name not in inputs:
            inputs[name] = maker.required(name, inputs)
    inputs.update({k: v for k, v in maker.passed.items() if k not in inputs})
    if maker.experts and {"pixel_values", "pixel_attention_mask"} <= set(params):
        inputs.update(maker.prefix())  # the vision-language prefix an action expert attends to (PI0)
    if plan in ("paired", PLACEHOLDERS, FRAMES) or task == "zero_shot_image_classification":  # text and image together
        pairs = (
            ("input_ids", None),
            ("qformer_input_ids", "qformer_config"),  # InstructBLIP: the instruction the Q-Former reads
            ("pixel_values", "vision_config"),
            ("input_features", "audio_config"),
            ("bbox", None),
            ("future_values", None),
            ("future_time_features", None),
        )
        for name, sub in pairs:
            if name in params and name not in inputs and (sub is None or _has_tower(config, name, sub)):
                inputs[name] = maker.kinds[name]()
        for name in DOCUMENTED_PAIRS:
            if name in params and name not in inputs and (made := maker.documented(name)) is not None:
                inputs[name] = made
    if "pixel_values" in inputs and {"spatial_shapes", "pixel_attention_mask"} <= set(params):
        inputs.update(maker.naflex())  # with text too (SigLIP 2's dual encoder)
    if plan == PLACEHOLDERS:
        inputs.update(maker.placeholders(inputs, params))
    pixels, text = inputs.get("pixel_values"), inputs.get("input_ids")
    if "image_attention_mask" in params and isinstance(pixels, torch.Tensor) and isinstance(text, torch.Tensor):
        if pixels.ndim == 5:  # several images per text, each token attending to each (IDEFICS)
            inputs["image_attention_mask"] = torch.ones(BATCH, text.shape[1], pixels.shape[1], dtype=torch.long)
    if "noise" in params and "pixel_values" in inputs:
        inputs["noise"] = maker.noise()
    for name in MASKS:  # a mask beside each text input
        text = name.replace("attention_mask", "input_ids")
        if name in params and text in inputs and name not in inputs:
            inputs[name] = torch.ones_like(inputs[text])
    if "input_features" in inputs and "input_features_mask" in params and "input_features_mask" not in inputs:
        inputs["input_features_mask"] = maker.features_mask(inputs["input_features"])  # AudioFlamingo 3 reads it
    if "use_cache" in params:  # the forward check looks at outputs, not the cache
        inputs["use_cache"] = False
    if "decoder_input_values" in params and "decoder_input_values" not in inputs and _normed_first(model):
        inputs["decoder_input_values"] = maker.waveform()  # its decoder has no prenet either
    decoder = "decoder_input_ids"
    if decoder in params and getattr(config, "is_encoder_decoder", False) and decoder not in inputs:
        inputs[decoder] = maker.text()  # as long as the text: BART's classifier reads eos from both
    if plan == CHANNELS_LAST:
        inputs.update(maker.per_codebook(inputs))
    inputs.update(_stacked_images(model, inputs))
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


PLAIN = (torch.Tensor, int, float, bool, str, type(None), list, tuple, dict, torch.dtype, torch.device)


def fresh(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs of one forward pass, a stateful input deep-copied (anything but tensors and
    plain values: a video model's inference session, which forward fills with its outputs and
    memory): every pass starts from the state the inputs were made in, and a repeated pass
    computes its output again instead of reading the one the first pass stored."""
    return {k: v if isinstance(v, PLAIN) else copy.deepcopy(v) for k, v in inputs.items()}


# Where a model with one config keeps its image tower's settings instead of a vision_config (ViLT).
IMAGE_TOWERS = ("image_size",)


def _has_tower(config: Any, name: str, sub: str) -> bool:
    """The config describes the tower that reads this input: its sub-config, or for images the
    image settings of a single config (ViLT, UDOP)."""
    if getattr(config, sub, None) is not None:
        return True
    return name == "pixel_values" and any(getattr(config, key, None) is not None for key in IMAGE_TOWERS)


# How a model's own generate() reads an input from its keyword arguments.
KWARGS_READ = re.compile(r"""kwargs(?:\.get\(|\.pop\(|\[)\s*["'](\w+)["']""")


def generate_inputs(model: Any, device: torch.device) -> dict[str, Any]:
    """The inputs a model's own generate() reads by name that its forward does not take, made as
    the harness makes that kind (Kyutai speech-to-text generates from `input_values`, the audio
    its codec encodes, while its forward takes the codes): generate gets those instead."""
    from transformers import GenerationMixin

    generate = getattr(type(model), "generate", None)
    if generate is None or generate is GenerationMixin.generate:
        return {}
    try:
        source = inspect.getsource(generate)
    except (OSError, TypeError):
        return {}
    taken = {*inspect.signature(model.forward).parameters, *inspect.signature(GenerationMixin.generate).parameters}
    maker = _Maker(model, torch.Generator().manual_seed(SEED), str(getattr(model, "fleet_inputs", PLANS[0])))
    names = dict.fromkeys(KWARGS_READ.findall(source))  # generate's own `inputs` is no input of the model's
    made = {n: maker.kinds[n]().to(device) for n in names if n not in taken and n in maker.kinds}
    # an input its own generate() requires by position (Pop2Piano generates from input_features, its
    # forward's main input being input_ids): of the shape generate's docstring gives, else of its kind
    for name, param in inspect.signature(generate).parameters.items():
        required = param.default is param.empty and param.kind is param.POSITIONAL_OR_KEYWORD
        if required and name != "self" and name not in made:
            tensor = maker.documented(name, generate.__doc__ or "")
            tensor = tensor if tensor is not None else maker.kinds[name]() if name in maker.kinds else None
            if tensor is not None:
                made[name] = tensor.to(device)
    return made


def streamed_audio(model: Any, inputs: dict[str, Any], new_tokens: int) -> dict[str, Any]:
    """Generate's features where the config counts mel frames per text token and generation
    stops where the audio does (Voxtral Realtime: at most frames / audio_length_per_tok tokens,
    the prompt included; its forward adds one audio token to each text token): the features
    forward was checked on, followed by seeded frames for the new tokens. {} for other models."""
    features = inputs.get("input_features")
    per_token = _get(model.config, "audio_length_per_tok")
    if not isinstance(features, torch.Tensor) or features.ndim != 3 or type(per_token) is not int or per_token <= 0:
        return {}
    g = torch.Generator().manual_seed(SEED)
    more = torch.randn(features.shape[0], features.shape[1], new_tokens * per_token, generator=g)
    return {"input_features": torch.cat([features, more.to(features.device, features.dtype)], dim=-1)}


def _main_input(model: Any, params: Any, required: list[str]) -> str:
    """The model's main input; a class that inherits the default (input_ids) but whose forward
    does not take it (a vision tower of a multimodal model) is fed by its first required input."""
    main = str(getattr(model, "main_input_name", "input_ids"))
    if main in params or not required:
        return main
    return required[0]


class _Maker:
    """Seeded tensors by input name, sized from the model's config."""

    def __init__(self, model: Any, g: torch.Generator, plan: str = PLANS[0]) -> None:
        self.model, self.config, self.g = model, model.config, g
        self.channels_last, self.frames = plan == CHANNELS_LAST, plan == FRAMES
        vocab = int(_get(self.config, "vocab_size", default=100) or 100)
        # token ids stay within a vocabulary only a nested config names (FastSpeech 2 with HiFi-GAN:
        # its model_config's 78 phonemes), else ids up to 99 index past its embedding
        nested = vocab if _get(self.config, "vocab_size") else int(_deep_get(self.config, "vocab_size") or vocab)
        self.vocab, self.high = vocab, max(min(vocab, nested, 100), 5)
        self.experts: list[str] = []  # inputs made by expert(): embeddings a sub-model reads
        self.passed: dict[str, torch.Tensor] = {}  # what that sub-model requires besides, through **kwargs
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
            "input_features_mask": self.features_mask,
            "classes_structure": lambda: torch.ones(BATCH, dtype=torch.long),  # class names per image (one each)
            # Gemma 3n's audio encoder: mel frames time first, and a mask True where a frame is padding
            "audio_mel": lambda: torch.randn(BATCH, MEL_FRAMES, self._bins(), generator=self.g),
            "audio_mel_mask": lambda: torch.zeros(BATCH, MEL_FRAMES, dtype=torch.bool),
        }

    def required(self, name: str, inputs: dict[str, Any]) -> Any:
        """An input forward requires by name: a kind the harness makes, else by its suffix: more
        token ids (OmDet-Turbo's class names and task prompts, one row per batch item) with a mask
        of ones beside each."""
        if name in self.kinds:
            return self.kinds[name]()
        ids = name.removesuffix("_attention_mask") + "_input_ids"
        if name.endswith("_input_ids"):
            return self.text()
        if name.endswith("_attention_mask") and ids in inputs:
            return torch.ones_like(inputs[ids])
        made = self.documented(name)
        if made is None:
            made = self.expert(name)
        if made is not None:
            return made
        raise Unsupported(f"{type(self.model).__name__}.forward requires {name!r}, an input the harness lacks")

    def per_codebook(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Token ids with one column per codebook, (batch, seq, codebooks), where the model embeds
        several codebooks at once through a buffer of per-codebook offsets (Dia's decoder: its
        decoder_input_ids; Kyutai speech-to-text: the text and 32 audio codebooks side by side)."""
        out: dict[str, torch.Tensor] = {}
        for name, buffer in self.model.named_buffers():
            key = "decoder_input_ids" if "decoder" in name else "input_ids"
            ids = inputs.get(key)
            if name.endswith("offsets") and buffer.ndim == 1 and isinstance(ids, torch.Tensor) and ids.ndim == 2:
                out.setdefault(key, torch.randint(3, self.high, (*ids.shape, buffer.numel()), generator=self.g))
        return out

    def documented(self, name: str, doc: str | None = None) -> torch.Tensor | None:
        """An input of the shape forward's docstring gives it, "`name` (`torch.Tensor` of shape
        `(batch_size, hidden_size, frames)`)": batch_size is the batch, a dimension the config (or
        a sub-config) names is that value, a number is itself, any other (frames, sequence_length,
        episode_length) the text length. Floats, or positions 0..SEQ-1 for integer names (timesteps,
        *_ids). Mimi's decoder latents, Decision Transformer's states, actions, returns and
        timesteps, LXMERT's visual features, MuseGlimmer's `[batch_size, config.block_size, dim]`
        noise. None when the docstring gives no shape."""
        documented = _doc_shape(doc or self.model.forward.__doc__ or "", name)  # or another method's (generate's)
        if documented is None:
            return None
        shape = []
        for dim in (d.strip().removeprefix("config.") for d in documented.split(",")):
            value = self._dim(dim)
            if dim == "batch_size":
                shape.append(BATCH)
            elif dim in ("height", "width") and "num_channels" in documented:  # an image: the image side
                shape.append(_size(_get(self.config, "image_size", default=32)))
            elif dim.isdigit() or type(value) is int:
                shape.append(int(dim) if dim.isdigit() else value)
            elif re.fullmatch(r"\w+", dim):
                shape.append(self._own_length(name) if "len" in dim else SEQ)
            elif (product := self._product(dim)) is not None:
                shape.append(product)
            else:
                return None  # another expression ("sequence_length + 1"): not guessed
        if name == "timesteps" or name.endswith(("_ids", "_index")):
            return torch.arange(SEQ).expand(*shape[:-1], SEQ).clone() if shape[-1] == SEQ else None
        return torch.randn(*shape, generator=self.g)

    def _own_length(self, name: str) -> int:
        """The length the config fixes for one input, named after its first word (OneFormer's
        `task_inputs`, documented `(batch_size, sequence_length)`, feed a linear layer as wide as
        `task_seq_len`), else the text length."""
        prefix = name.split("_", 1)[0]
        for key in (f"{prefix}_seq_len", f"{prefix}_sequence_length", f"{prefix}_length"):
            value = _get(self.config, key)
            if type(value) is int and value > 0:
                return value
        return SEQ

    def _dim(self, dim: str) -> Any:
        """A dimension the config (or a sub-config) names; the model width where a docstring
        names a width the config does not have (MuseGlimmer's assistant: `dim`)."""
        value = _get(self.config, dim) or _deep_get(self.config, dim)
        if value is None and dim in WIDTHS:
            from workers.tiny.shrink import width

            return width(self.config) or None
        return value

    def _product(self, dim: str) -> int | None:
        """A documented width that is a product of config values, numbers and lengths of config
        lists (MuseGlimmer's assistant: `dim * len(config.target_layer_ids)`, the target's layers
        side by side); None where a factor is none of these."""
        product = 1
        for factor in (f.strip().removeprefix("config.") for f in dim.split("*")):
            listed = re.fullmatch(r"len\((?:config\.)?(\w+)\)", factor)
            value = _get(self.config, listed.group(1)) if listed else self._dim(factor)
            if listed and isinstance(value, (list, tuple)):
                product *= len(value)
            elif factor.isdigit() or type(value) is int:
                product *= int(factor) if factor.isdigit() else int(value)
            else:
                return None
        return product

    def first_layer(self, name: str) -> torch.Tensor | None:
        """Hidden states, undocumented, as the model's first layer takes them (VibeVoice's acoustic
        tokenizer halves): a Conv1d's (batch, in_channels, length), a waveform of the harness's
        length where those are the config's audio channels, else SEQ frames (latents); a Linear's
        (batch, SEQ, in_features). None for other names or first layers."""
        if name != "hidden_states":
            return None
        first = next((m for m in self.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))), None)
        if isinstance(first, torch.nn.Linear):
            return torch.randn(BATCH, SEQ, first.in_features, generator=self.g)
        if isinstance(first, torch.nn.Conv1d):
            audio = first.in_channels == _get(self.config, "audio_channels", "channels", default=1)
            return torch.randn(BATCH, first.in_channels, self._samples() if audio else SEQ, generator=self.g)
        return None

    def session(self, name: str, params: Any, device: torch.device) -> dict[str, Any] | None:
        """A video model's inference session (SAM 2 video, SAM 3 tracker video, EdgeTAM video,
        SAM 3 video), made as the model's processor makes it (`init_video_session`) where forward's
        annotation names a class built from a `video`: SESSION_FRAMES seeded frames at the
        config's image side, already processed, in the session's dtype and on the device; one
        prompt per object on frame 0, BATCH objects (the output's first dimension), as
        `add_inputs_to_inference_session` adds them: a positive point each where the session takes
        points. And `frame_idx` 0 where forward takes it. None where the annotation names no such
        class; a session prompted by text (SAM 3 video: per-object outputs) is the harness's miss."""
        cls = _annotated(self.model, params[name].annotation)
        if not isinstance(cls, type) or issubclass(cls, torch.Tensor):
            return None
        try:
            init = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return None
        if "video" not in init:
            return None
        config = self.config
        side = _size(_get(config, "image_size") or _deep_get(config, "image_size") or 32)
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        video = torch.randn(SESSION_FRAMES, 3, side, side, generator=self.g)
        given = {
            "video": video,
            "video_height": side,
            "video_width": side,
            "inference_device": device,
            "inference_state_device": device,
            "video_storage_device": device,
            "dtype": dtype,  # the session's own default is the string "float32", which Tensor.to refuses
        }
        session: Any = cls(**{k: v for k, v in given.items() if k in init})
        if hasattr(session, "add_point_inputs"):
            objects = list(range(BATCH))
            for obj in objects:
                points = {
                    "point_coords": torch.rand(1, 1, 1, 2, generator=self.g) * side,
                    "point_labels": torch.ones(1, 1, 1, dtype=torch.int32),
                }
                session.add_point_inputs(session.obj_id_to_idx(obj), 0, points)
            session.obj_with_new_inputs = objects
        elif hasattr(session, "add_prompt"):  # a detector, then a tracker of what it detects (SAM 3 video)
            raise Unsupported(
                f"{cls.__name__} is prompted by text: forward returns per-object dicts (a (1, h, w) mask per object "
                "id it detects, none with seeded random weights at the config's detection threshold), no batch-first "
                "float tensor for the check",
                any_config=True,
            )
        else:
            return None
        out: dict[str, Any] = {name: session}
        if "frame_idx" in params:
            out["frame_idx"] = 0
        return out

    def expert(self, name: str) -> torch.Tensor | None:
        """Embeddings that forward hands one of its own sub-models as its `inputs_embeds`
        (`self.dit(inputs_embeds=action_embeds, ...)`: PI0's and PI0.5's action expert reads the
        suffix tokens, documented with no shape): (batch, the config's action chunk, else the text
        length, that sub-model's width). None where forward hands the input to no sub-model so."""
        from transformers import PretrainedConfig

        from workers.tiny.shrink import width

        try:
            source = inspect.getsource(type(self.model).forward)
        except (OSError, TypeError):
            return None
        match = re.search(rf"self\.(\w+)\([^)]*?\binputs_embeds={re.escape(name)}\b", source)
        sub: Any = getattr(self.model, match.group(1), None) if match else None
        config = getattr(sub, "config", None)
        wide = width(config) if isinstance(config, PretrainedConfig) else 0
        if sub is None or not wide:
            return None
        chunk = getattr(self.config, "chunk_size", None)
        self.experts.append(name)
        made = torch.randn(BATCH, chunk if type(chunk) is int and chunk > 0 else SEQ, wide, generator=self.g)
        # what else the sub-model requires, passed on through forward's **kwargs, by the shape the
        # sub-model's docstring gives it (PI0.5's expert: `timestep_embeds` (batch_size, hidden_size))
        own = inspect.signature(self.model.forward).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in own):
            inner = _Maker(sub, self.g, PLANS[0])
            for key, param in inspect.signature(sub.forward).parameters.items():
                if param.default is param.empty and param.kind <= param.KEYWORD_ONLY and key != "inputs_embeds":
                    tensor = inner.documented(key)
                    if tensor is not None:
                        self.passed[key] = tensor
        return made

    def prefix(self) -> dict[str, torch.Tensor]:
        """The vision-language prefix an action expert attends to (PI0, PI0.5: forward builds the
        expert's cache from it, and fails without one), as their processor makes it: one camera
        image per batch item, (batch, cameras, channels, side, side), with its camera mask, and the
        text after one image token per image feature (what the vision-language sub-model's own
        get_image_features gives per image), with a mask of ones."""
        vlm = next((m for m in self.model.children() if hasattr(m, "get_image_features")), None)
        token = getattr(getattr(vlm, "config", None), "image_token_id", None)
        if vlm is None or type(token) is not int:
            raise Unsupported("prefix: no vision-language sub-model with an image token")
        vision = _sub(vlm.config, "vision_config")
        side = _size(getattr(vision, "image_size", 32) or 32)
        channels = int(getattr(vision, "num_channels", 3) or 3)
        pixels = torch.randn(BATCH, 1, channels, side, side, generator=self.g)
        device = next(vlm.parameters()).device
        with torch.inference_mode():
            out = vlm.get_image_features(pixels.flatten(0, 1).to(device))
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        text = self.text()
        ids = torch.cat([torch.full((BATCH, int(features.shape[1])), token, dtype=text.dtype), text], dim=1)
        return {
            "pixel_values": pixels,
            "pixel_attention_mask": torch.ones(BATCH, 1, dtype=torch.bool),
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
        }

    def companions(self, params: Any) -> dict[str, torch.Tensor]:
        """Every optional input forward documents a shape for, but labels (masks all ones)."""
        out: dict[str, torch.Tensor] = {}
        for name in params:
            if name == "labels" or name.endswith("labels"):
                continue
            made = self.documented(name)
            if made is not None:
                out[name] = torch.ones(made.shape, dtype=torch.long) if name.endswith("mask") else made
        return out

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
        size = _size(_get(config, "image_size", default=getattr(self.model, "fleet_image_side", 32)))
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
        normed = _normed_first(self.model)
        if normed:  # no prenet: hidden states (SpeechT5Model built alone)
            return torch.randn(BATCH, SEQ, normed, generator=self.g)
        bins, frames = _get(self.config, "num_mel_bins"), getattr(self.config, "max_length", None)
        if isinstance(bins, int) and isinstance(frames, int):  # a spectrogram's frames as input_values (AST)
            return torch.randn(BATCH, frames, bins, generator=self.g)
        channels = _get(self.config, "audio_channels")  # codecs take (batch, channels, samples)
        if self.channels_last:
            channels = channels or 1
        return torch.randn(*((BATCH, int(channels)) if channels else (BATCH,)), self._samples(), generator=self.g)

    def _samples(self) -> int:
        """1600 samples, or four hops of a codec whose hop is longer than half of that (PE Audio's
        DAC encoder: 1920 samples per frame); rounded up to whole tokens where the config counts
        samples per token (MuseSpark)."""
        hop = _hop_length(self.config)
        if 2 * hop > WAVEFORM:
            return 4 * hop
        token = _get(self.config, "samples_per_token")  # MuseSpark's audio tokens: whole ones only
        return -(-WAVEFORM // token) * token if type(token) is int and token > 0 else WAVEFORM

    def _bins(self) -> int:
        keys = ("num_mel_bins", "feature_size", "input_feat_per_channel", "input_feat_size")
        return int(_get(self.config, *keys) or _deep_get(self.config, *keys) or _subsampled_bins(self.model) or 80)

    def features(self) -> torch.Tensor:
        bins = self._bins()
        per_hop = self._frames_per_hop()
        if type(_get(self.config, "spec_size")) is int:  # a spectrogram read as an image (CLAP's HTS-AT)
            channels = int(_get(self.config, "patch_embed_input_channels", default=1) or 1)
            return torch.randn(BATCH, channels, MEL_FRAMES, bins, generator=self.g)
        if self.channels_last:  # stacked frames where the model takes them (Wav2Vec2-BERT)
            stacked = _get(self.config, "feature_projection_input_dim", "input_dim")
            bins = int(stacked or _stacked_bins(self.model, bins))
            return torch.randn(BATCH, per_hop or 64, bins, generator=self.g)
        length = per_hop or min(int(_get(self.config, "max_source_positions", default=1500)) * 2, 3000)
        per_token = _get(self.config, "audio_length_per_tok")
        if type(per_token) is int and per_token > 0:  # mel frames per text token, added to it (Voxtral Realtime)
            length = SEQ * per_token
        return torch.randn(BATCH, bins, length, generator=self.g)

    def _frames_per_hop(self) -> int:
        """A codec that reads a waveform and its features together, joining them frame by frame
        (XCodec2: its semantic encoder's frames beside its acoustic encoder's, one per hop): one
        feature frame per hop of the waveform; else 0."""
        params = inspect.signature(self.model.forward).parameters
        hop = _hop_length(self.config)
        return max(self._samples() // hop, 1) if hop > 0 and {"input_values", "input_features"} <= set(params) else 0

    def features_mask(self, features: torch.Tensor | None = None) -> torch.Tensor:
        """Every frame of the features valid: (batch, frames) in the plan's layout."""
        features = self.features() if features is None else features
        return torch.ones(BATCH, features.shape[1 if self.channels_last else -1], dtype=torch.long)

    def query(self) -> torch.Tensor:
        queries = int(_get(self.config, "num_query_tokens", default=4))
        hidden = int(_get(self.config, "hidden_size", default=32))
        return torch.randn(BATCH, queries, hidden, generator=self.g)

    def naflex(self) -> dict[str, torch.Tensor]:
        """NaFlex vision towers (SigLIP 2): each image as its flat patches, a patch mask and
        its (rows, columns) grid."""
        config = _sub(self.config, "vision_config")
        patch = int(getattr(config, "patch_size", 8) or 8)
        channels = int(getattr(config, "num_channels", 3) or 3)
        side = 2
        pixels = torch.randn(BATCH, side * side, channels * patch * patch, generator=self.g)
        return {
            "pixel_values": pixels,
            "pixel_attention_mask": torch.ones(BATCH, side * side, dtype=torch.long),
            "spatial_shapes": torch.tensor([[side, side]] * BATCH),
        }

    def positioned(self) -> dict[str, torch.Tensor]:
        """Vision towers fed flat patches with their (x, y) patch positions (Gemma 4): a square
        grid of patches whose side is a multiple of the pooling kernel the tower pools them with."""
        config = _sub(self.config, "vision_config")
        patch = int(getattr(config, "patch_size", 8) or 8)
        channels = int(getattr(config, "num_channels", 3) or 3)
        side = 2 * int(getattr(config, "pooling_kernel_size", 1) or 1)
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        positions = torch.stack([xs.flatten(), ys.flatten()], dim=-1)
        return {
            "pixel_values": torch.rand(BATCH, side * side, channels * patch * patch, generator=self.g),
            "pixel_position_ids": positions.unsqueeze(0).expand(BATCH, -1, -1).clone(),
        }

    def strip(self) -> dict[str, torch.Tensor]:
        """NaViT-style packing (MiniCPM-V's vision towers): every image's patches side by side in
        one strip one patch high, (1, channels, patch, patches x patch), with each image's
        (rows, columns) of patches in target_sizes."""
        config = _sub(self.config, "vision_config")
        patch = int(getattr(config, "patch_size", 8) or 8)
        channels = int(getattr(config, "num_channels", 3) or 3)
        side = max(_size(getattr(config, "image_size", 32) or 32) // patch, 1)
        pixels = torch.randn(1, channels, patch, BATCH * side * side * patch, generator=self.g)
        return {"pixel_values": pixels, "target_sizes": torch.tensor([[side, side]] * BATCH)}

    def placeholders(self, inputs: dict[str, Any], params: Any) -> dict[str, torch.Tensor]:
        """Placeholder tokens ahead of the text, one per image feature: the config's image token
        (set when the default leaves it unset, as a processor's config would), or a position mask
        where the model takes one (Kosmos-2's image_embeds_position_mask)."""
        if "input_ids" not in inputs or "pixel_values" not in inputs:
            raise Unsupported("placeholders: the model takes no text with its image")
        count = self._image_features(inputs["pixel_values"])
        text = inputs["input_ids"]
        out: dict[str, torch.Tensor] = {}
        if "image_embeds_position_mask" in params:
            filler = torch.full((BATCH, count), int(text[0, 0]), dtype=text.dtype)
            out["input_ids"] = torch.cat([text[:, :1], filler, text[:, 1:]], dim=1)
            mask = torch.zeros_like(out["input_ids"])
            mask[:, 1 : 1 + count] = 1
            out["image_embeds_position_mask"] = mask
            return out
        keys = IMAGE_TOKENS
        if not any(_defines(self.config, k) for k in keys) and any(_defines(self.config, k) for k in VIDEO_TOKENS):
            keys = VIDEO_TOKENS  # a video model's frames (InstructBLIP-Video: one query set per frame)
            if inputs["pixel_values"].ndim == 4:
                self.frames = True
                out["pixel_values"] = self.image()
            count = self._image_features(out.get("pixel_values", inputs["pixel_values"]))
        token = next((getattr(self.config, k, None) for k in keys), None)
        if token is None:
            if not any(hasattr(self.config, k) for k in keys):
                raise Unsupported("placeholders: the config names no image token")
            vocab = int(getattr(_sub(self.config, "text_config"), "vocab_size", None) or self.vocab)
            token = min(vocab - 1, 100)  # above every id the text uses (3 .. 99)
            setattr(self.config, keys[0], token)
        out["input_ids"] = torch.cat([torch.full((BATCH, count), int(token), dtype=text.dtype), text], dim=1)
        return out

    def _image_features(self, pixel_values: torch.Tensor) -> int:
        """Image features per image: a query-token model's query count, else what the model's
        own get_image_features returns."""
        for key in QUERY_COUNTS:
            value = _get(self.config, key) or getattr(_sub(self.config, "text_config"), key, None)
            if isinstance(value, int) and value > 0:  # per image; per frame of a video
                return value * (int(pixel_values.shape[1]) if pixel_values.ndim == 5 else 1)
        get = getattr(self.model, "get_image_features", None)
        if get is None:
            raise Unsupported("placeholders: no query count and no get_image_features")
        with torch.inference_mode():
            out = get(pixel_values=pixel_values)
        if not isinstance(out, (torch.Tensor, list, tuple)):
            pooled = getattr(out, "pooler_output", None)
            out = pooled if pooled is not None else out[0]
        parts = list(out) if isinstance(out, (list, tuple)) else [out]
        return sum(p.numel() // p.shape[-1] for p in parts) // BATCH

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
        encoder = getattr(self.model, "encoder", None)
        own = getattr(encoder, "main_input_name", None)
        if isinstance(own, str) and own != "inputs" and own in self.kinds:  # a composite's encoder input
            return self.kinds[own]()  # (SpeechEncoderDecoder: its speech encoder's waveform)
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
        temporal = int(_get(config, "temporal_patch_size", "patch_temporal", default=1) or 1)
        channels = int(getattr(config, "in_channels", None) or getattr(config, "num_channels", None) or 3)
        merge = int(_get(config, "spatial_merge_size", "merge_size", default=1) or 1)
        side = 2 * merge
        grid = torch.tensor([[1, side, side]] * BATCH)
        shape: tuple[int, ...] = (channels * temporal * patch * patch,)
        if self.channels_last and _patch_conv(self.model, channels, patch) == 2:  # each patch whole (Kimi K2.5)
            shape = (channels, patch, patch)
        patches = torch.randn(BATCH * side * side, *shape, generator=self.g)
        grid_name = next(p for p in PACKED if p in params)
        main = "hidden_states" if "hidden_states" in params else "pixel_values"
        documented = _doc_shape(self.model.forward.__doc__ or "", main) or ""
        if merge > 1 and documented.count("merge") >= 2 and (made := self.documented(main)) is not None:
            # one merged patch per language-model token, as documented (Inkling 2: (num_image_tokens,
            # patch x merge, patch x merge, channels)), the grid counted in those tokens
            grid = torch.tensor([[1, 2, 2]] * BATCH)
            patches = torch.randn(BATCH * 4, *made.shape[1:], generator=self.g)
            return {main: patches, grid_name: grid}
        out = {main: patches, grid_name: grid}
        if "merge_sizes" in params:  # VideoLLaMA 3: each image's spatial merge
            out["merge_sizes"] = torch.tensor([merge] * BATCH)
        return out


# Two inputs a forward stacks along the height, as one image: `torch.cat((prompt_masks, labels), dim=2)`.
HEIGHT_STACK = re.compile(r"torch\.cat\(\(\s*(\w+),\s*(\w+)\s*\),\s*dim=2\)")


def _stacked_images(model: Any, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Images the forward stacks along the height into the one image the config sizes (SegGPT:
    the prompt over the image, the prompt mask over itself, 896 x 448 of two 448 x 448): each
    takes its half of the configured height."""
    four_d = [t for t in inputs.values() if isinstance(t, torch.Tensor) and t.ndim == 4]
    if len(four_d) < 2:  # no pair to stack: the forward's source is not read
        return {}
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        return {}
    names = {n for pair in HEIGHT_STACK.findall(source) for n in pair if n in inputs}
    images = {n: inputs[n] for n in names if isinstance(inputs[n], torch.Tensor) and inputs[n].ndim == 4}
    if len(images) < 2 or len({tuple(t.shape) for t in images.values()}) != 1:
        return {}
    return {n: t[:, :, : max(t.shape[2] // 2, 1)].contiguous() for n, t in images.items()}


def _normed_first(model: Any) -> int:
    """The width of the model's first layer when it is a LayerNorm (a speech-or-text model built
    without its input prenets, SpeechT5Model: its input values are hidden states), else 0."""
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            shape = getattr(module, "normalized_shape", None) if isinstance(module, torch.nn.LayerNorm) else None
            return int(shape[-1]) if shape else 0
    return 0


def _doc_shape(doc: str, name: str) -> str | None:
    """The shape a docstring gives an argument, "`name` (`torch.Tensor` of shape `(a, b)`)": "a, b"."""
    match = re.search(rf"^\s*{re.escape(name)} \(`[^`]*` of shape `[\(\[]([^`]*)[\)\]]`", doc, re.M)
    return match.group(1) if match else None


SESSION_FRAMES = 2  # frames of a video inference session


def _annotated(model: Any, annotation: Any) -> Any:
    """The class an argument's annotation names, resolved in the model's module where it is a string."""
    if isinstance(annotation, str):
        return getattr(sys.modules.get(type(model).__module__), annotation, None)
    return annotation


def _hop_length(config: Any, depth: int = 0) -> int:
    """The longest hop_length (or codec frame) the config or its sub-configs name (0 when none)."""
    from transformers import PretrainedConfig

    # frame_size: a codec's samples per frame (Mimi: Kyutai speech-to-text's codec)
    hops = [v for v in (getattr(config, k, 0) for k in ("hop_length", "frame_size")) if type(v) is int]
    if depth < 2:
        hops += [_hop_length(v, depth + 1) for v in vars(config).values() if isinstance(v, PretrainedConfig)]
    return max(hops, default=0)


STACKED = 7  # frames a speech encoder may take side by side (FunASR stacks 7; Nemotron 3 projects 8 x 128 from one)


def _stacked_bins(model: Any, bins: int) -> int:
    """The width of stacked frames a speech encoder's first layer takes when it is a linear one
    (up to STACKED frames of mel bins side by side: GraniteSpeech 5, FunASR); else the bins (a 2-D
    convolution subsampling them: Parakeet; a wider projection: Nemotron 3 diarization)."""
    modules = list(model.modules())
    if any(isinstance(m, torch.nn.Conv2d) for m in modules):  # a convolution subsamples the bins
        return bins
    first = next((m for m in modules if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))), None)
    if isinstance(first, torch.nn.Linear) and first.in_features % bins == 0 and first.in_features <= STACKED * bins:
        return first.in_features
    return bins


def _subsampled_bins(model: Any) -> int:
    """The mel bins a 2-D convolution subsampler implies where the config names none (Gemma 4's
    audio encoder: two stride-2 convolutions, then a linear layer over (bins / 4) x 32 channels
    = 1024: 128 bins): the first linear layer's input over the last convolution's channels,
    times the convolutions' strides along the bins; 0 where the model does not start so."""
    convs: list[torch.nn.Conv2d] = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            convs.append(module)
        elif isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)):
            if not convs or not isinstance(module, torch.nn.Linear) or module.in_features % convs[-1].out_channels:
                return 0
            stride = 1
            for conv in convs:
                stride *= int(conv.stride[-1])
            return module.in_features // convs[-1].out_channels * stride
    return 0


def _patch_conv(model: Any, channels: int, patch: int) -> int:
    """The dimensions of the model's first convolution when it embeds patches of this size
    (2: Conv2d, 3: Conv3d), else 0."""
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            size = tuple(module.kernel_size)[-2:]
            return len(module.kernel_size) if module.in_channels == channels and size == (patch, patch) else 0
    return 0


def _defines(config: Any, key: str) -> bool:
    """The config's class defines the key (a field or an alias), not only this instance."""
    return hasattr(type(config), key) or key in (getattr(config, "attribute_map", None) or {})


def _sub(config: Any, name: str) -> Any:
    return getattr(config, name, None) or config


def leading_sizes(config: Any, inputs: dict[str, Any]) -> set[int]:
    """The sizes an output's first dimension may have: the batch, or for packed patches the
    patch count (before or after the spatial merge) and the number of images."""
    sizes = {BATCH}
    grid = next((inputs[p] for p in PACKED if p in inputs), None)
    if isinstance(grid, torch.Tensor):
        patches = int(grid.prod(dim=-1).sum())
        merge = int(_get(_sub(config, "vision_config"), "spatial_merge_size", "merge_size", default=1) or 1)
        sizes |= {1, patches, patches // (merge * merge), int(grid.shape[0])}  # 1: one packed sequence
    for ids in (inputs.get("input_ids"), inputs.get("decoder_input_ids")):
        if isinstance(ids, torch.Tensor) and ids.ndim == 3:  # per-codebook ids: Dia's logits are per codebook
            sizes.add(BATCH * int(ids.shape[-1]))
    pixels = inputs.get("pixel_values")
    if isinstance(pixels, torch.Tensor) and pixels.ndim == 5:  # frames through an image tower (InstructBLIP-Video)
        sizes.add(BATCH * int(pixels.shape[1]))
    positions = inputs.get("pixel_position_ids")
    if isinstance(positions, torch.Tensor):  # positioned patches: every image's patches, pooled or not
        pool = int(getattr(_sub(config, "vision_config"), "pooling_kernel_size", 1) or 1)
        patches = int(positions.shape[0] * positions.shape[1])
        sizes |= {patches, patches // (pool * pool)}
    return sizes
