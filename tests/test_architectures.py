"""Every architecture transformers knows (issue 16): the enumeration, the generic builder on a
sample from every modality (real run_job, real tiny models), harness gaps kept apart from model
failures, the report at scale, and the CLI end to end with real Redis and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import transformers

from fleet.errors import ErrorKind, FleetError
from fleet.jobs import job_problem
from fleet.protocol import Status, base_result, terminal_result
from fleet.settings import RunSettings
from orchestrator import architectures
from orchestrator.report import assemble, md, render_markdown
from orchestrator.submit import plan_jobs
from tests.helpers import ROOT, orchestrator
from workers.architectures import TASKS, listing
from workers.core import run_job
from workers.tiny.shrink import VARIANTS, default_config, tiny_config

REQUIRED_TASKS = {
    "base",
    "causal_lm",
    "seq2seq_lm",
    "masked_lm",
    "sequence_classification",
    "ctc",
    "speech_seq2seq",
    "image_classification",
    "audio_classification",
    "video_classification",
    "zero_shot_image_classification",
}


@pytest.fixture(scope="module")
def found() -> dict[str, Any]:
    return listing()


def _job(found: dict[str, Any], cls: str, device: str = "cpu") -> dict[str, Any]:
    catalog = architectures.catalog(found, cls)
    (job,) = plan_jobs("run-arch", catalog, None, [device], RunSettings(), pins=[])
    return job


def test_enumeration_comes_from_the_installed_transformers() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "workers.architectures", "--json"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    data = json.loads(out.stdout)
    assert data["transformers"] == transformers.__version__
    rows = data["classes"]
    assert len({r["class"] for r in rows}) == len(rows) >= 700
    assert REQUIRED_TASKS <= set(TASKS) and {r["task"] for r in rows} == REQUIRED_TASKS
    by_class = {r["class"]: r for r in rows}
    assert by_class["LlamaForCausalLM"]["check"] == "generate"
    assert by_class["WhisperForConditionalGeneration"]["task"] == "speech_seq2seq"
    assert by_class["ViTForImageClassification"] == {
        "class": "ViTForImageClassification",
        "model_type": "vit",
        "task": "image_classification",
        "check": "forward",
    }
    assert by_class["BertModel"]["task"] == "base"
    bad = subprocess.run(
        [sys.executable, "-m", "workers.architectures", "--tasks", "nonsense"], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode == 2 and "unknown task" in bad.stderr and "Traceback" not in bad.stderr


def test_selection_by_all_task_and_class(found: dict[str, Any]) -> None:
    assert len(architectures.select(found, "all")) == len(found["classes"])
    ctc = architectures.select(found, "ctc")
    assert ctc and {r["task"] for r in ctc} == {"ctc"}
    two = architectures.select(found, "BertModel, ctc")
    assert {r["class"] for r in two} == {"BertModel"} | {r["class"] for r in ctc}
    with pytest.raises(FleetError, match="'NoSuchModel' is neither"):
        architectures.select(found, "NoSuchModel")
    job = _job(found, "BertForMaskedLM")
    assert job["job_id"] == "arch:BertForMaskedLM@cpu"
    assert job["family_spec"]["synthetic"] == "auto:BertForMaskedLM"
    assert job["family_spec"]["candidates"] == [] and job["repeats"] == 1
    assert job_problem(job) is None  # a worker accepts it
    # the task rides in the job: a job whose process dies still counts under its task
    assert job["task"] == "masked_lm"
    lost = terminal_result(job, Status.LOST, ErrorKind.WORKER_LOST, "killed")
    assert lost["task"] == "masked_lm"
    assert "task must be" in str(job_problem({**job, "task": ""}))


SAMPLE = {  # one class per modality and task kind
    "BertForMaskedLM": ("masked_lm", "logits"),
    "LlamaForCausalLM": ("causal_lm", "logits"),
    "T5ForConditionalGeneration": ("seq2seq_lm", "logits"),
    "ViTForImageClassification": ("image_classification", "logits"),
    "Wav2Vec2ForSequenceClassification": ("audio_classification", "logits"),
    "Wav2Vec2ForCTC": ("ctc", "logits"),
    "WhisperForConditionalGeneration": ("speech_seq2seq", "logits"),
    "VideoMAEForVideoClassification": ("video_classification", "logits"),
    "CLIPModel": ("zero_shot_image_classification", "logits_per_image"),
}


@pytest.mark.parametrize("cls", sorted(SAMPLE))
def test_builder_runs_a_sample_of_every_modality(found: dict[str, Any], cls: str) -> None:
    task, output_name = SAMPLE[cls]
    result = run_job(_job(found, cls))
    assert result["status"] == Status.SYNTHETIC, result["error"]
    assert result["task"] == task and result["architecture"] == cls
    assert result["model_used"] == f"synthetic:auto:{cls}" and result["source"] == "synthetic"
    out = result["output"]
    assert out["output_name"] == output_name and out["shape"][0] == 2
    if task in ("causal_lm", "seq2seq_lm", "speech_seq2seq"):
        assert len(out["generated"]) == 2 and all(len(t) == 3 for t in out["generated"])
    again = run_job(_job(found, cls))  # seeded: the same model and output every time
    assert again["revision"] == result["revision"] and again["output"]["sample"] == out["sample"]
    # the builder's probe ran a forward pass on the twin: no warm-up pass before the timed one
    assert result["metrics"]["warmup"] == 0 and result["metrics"]["latency_ms_p50"] > 0


# The builder's rules, one class each: what failed before the rule, and the input plan it now runs with.
RULES = {
    "Qwen2VLModel": "main",  # multimodal rotary sections resized to the shrunk head
    "Glm4vVisionModel": "main",  # flat patches and a (t, h, w) grid; output rows are merged patches
    "EmbeddingGemma2TextModel": "main",  # per-layer (heterogeneous) config attributes
    "FalconH1Model": "main",  # secondary widths: state-space heads kept equal to expand x hidden
    "ConvNextModel": "main",  # per-stage lists cut to the shrunk number of stages
    "ConditionalDetrModel": "main",  # transformers' own backbone instead of timm
    "Aimv2Model": "paired",  # a dual encoder runs only on text and image together
    "BrosModel": "paired",  # layout boxes beside the text
    "Wav2Vec2BertModel": "channels_last",  # features (batch, time, stacked bins)
    "XCLIPModel": "frames",  # video frames and text: the X-CLIP family of the catalog
    "InformerModel": "main",  # a time series: history with lags, time features and mask
    "HGNetV2Backbone": "main",  # a tuple of feature maps: the check reads the first
    "ViTMAEModel": "main",  # seeded masking noise, else two passes mask different patches
    "Mamba2ForCausalLM": "main",  # state groups and heads consistent with expand x hidden
    "Blip2Model": "placeholders",  # one image token per query ahead of the text (the token set when unset)
    "Kosmos2Model": "placeholders",  # the same through an image position mask
    "InstructBlipModel": "placeholders",  # with the Q-Former's instruction; its towers' outputs checked
    "Siglip2Model": "main",  # NaFlex: flat patches, a patch mask and the (rows, columns) grid
    "ASTModel": "main",  # a spectrogram's frames as input_values
    "xLSTMModel": "main",  # a second name of the width (embedding_dim) follows the shrunk hidden size
    "DeepseekV2Model": "main",  # experts with the top-k left unset: the shrunk top-k
    "WavTokenizerEncoderModel": "main",  # only discrete codes out: the check reads the codes
    "Lfm3VlVisionModel": "main",  # no input_ids in forward: its first required input (patches and grid_thw)
    "Kimi_K25VisionModel": "channels_last",  # packed patches whole (channels, patch, patch) for a Conv2d embedding
    "VideoLlama3VisionModel": "main",  # packed patches with each image's merge size
    "Gemma4VisionModel": "main",  # flat patches with (x, y) positions, a grid the pooling kernel divides
    "EsmcModel": "main",  # a default without grouped KV heads keeps KV heads = heads (keys normed over the width)
    "CsmForConditionalGeneration": "main",  # depthwise groups (Mimi's upsample_groups) follow the shrunk width
    "GraniteSpeech5ForCTC": "channels_last",  # stacked frames as wide as the encoder's first linear layer
    "FunAsrNanoEncoder": "channels_last",  # a features mask beside the features
    "MaskFormerModel": "main",  # a backbone inside a segmenter keeps its stages, one block each
    "GraniteMoeHybridModel": "main",  # a linear-attention-only hybrid default gets one attention layer
    "MuseGlimmerVisionModel": "main",  # packed patches by its own names: patch_temporal, merge_size
    "Zamba2Model": "main",  # attention width twice the model width; hybrid layer ids follow the layer types
    "Qwen3_5ForSequenceClassification": "main",  # a padding token set on the text config too (batch of 2)
    "AudioFlamingo3Encoder": "main",  # an input_features_mask where forward takes one (all frames valid)
    "PeAudioEncoder": "channels_last",  # a waveform of four hops where a codec's hop is longer than 800 samples
    "RadioModel": "main",  # a width derived from the patch size (patch_dim = channels x patch x patch) follows it
    # mel bins from a nested sub-config (its ASR config); the diarization head's audio_hidden_size follows audio_config
    "Nemotron3_5TranscribeAudioModel": "channels_last",
    "KyutaiSpeechToTextModel": "channels_last",  # token ids per codebook where an offsets buffer embeds codebooks
    "DiaModel": "channels_last",  # cross_* attention widths shrunk; the decoder's ids per codebook
    "Nemotron3_5TranscribeWordTimestampModel": "main",  # a main input of the shape forward's docstring gives
    "DecisionTransformerModel": "paired",  # documented states, with their documented companions (actions, ...)
    "LxmertModel": "paired",  # documented visual features and positions beside the text
    "SpeechEncoderDecoderModel": "main",  # the generic `inputs` of a composite: its encoder's own (a waveform)
    "ZambaForCausalLM": "main",  # (table) two hybrid layers, so that their shared attention block ties
    "SamModel": "main",  # the prompt encoder's grid and the vision neck follow the shrunk towers (was 60 s+ unshrunk)
    "VJEPA2ForVideoClassification": "main",  # two tubelets of frames at the shrunk crop; its predictor shrunk too
    # rules a release other than the installed one needs (transformers 5.17; exercised below on 5.25's objects)
    "DetrModel": "main",  # a timm backbone by name: transformers' own config of that architecture
    "Idefics3Model": "main",  # a text config's padding token outside its vocabulary: 0
    "MusicgenForCausalLM": "main",  # generate says num_return_sequences and a decoder start token (its delay pattern)
    "ViltModel": "paired",  # an image beside the text where a single config names the image size
    "UdopModel": "paired",  # the same rule: the image beside the text and its layout boxes
    "Gemma3nAudioEncoder": "main",  # audio_mel: mel frames time first with the config's input_feat_size bins
    "Florence2Model": "main",  # a per-stage list of widths (DaViT's embed_dim) counts by its widest stage
    "HrmTextForCausalLM": "main",  # one layer per stack; the depth (cache slots) keeps stacks x cycles
    "MuseSparkAudioModel": "main",  # a waveform of whole tokens (samples_per_token)
    "KyutaiSpeechToTextForConditionalGeneration": "channels_last",  # generate gets the audio its own generate reads
    # consistent configs where the class's own default cannot be built (issue 26); a failing build's error says how
    "DbrxModel": "main",  # a sub-config lacking rope_theta inherits the enclosing config's; clip_qkv set (repair pass)
    "MoonshineStreamingModel": "main",  # a config lacking num_key_value_heads takes its inner encoder config's
    "T5Gemma2Encoder": "main",  # dropout_rate from the config class of the same model that declares it
    "ReformerModelWithLMHead": "main",  # a class asserting is_decoder=True gets it
    "PerceiverForImageClassificationFourier": "main",  # heads a width must be divisible by: their gcd
    "CohereCompassTextModel": "main",  # (repair pass) rotary parameters per layer type where the default has none
    "NeoMMEModel": "main",  # multimodal rotary sections inside rotary parameters nested by layer type
    "Dots1Model": "main",  # (repair pass) experts, top-k and shared experts left None: the shrunk values
    "ChameleonModel": "main",  # (repair pass) a vocabulary map left unset: placeholder and VQ-code tokens
    "Qwen4ExpTextModel": "main",  # (table) its sparse-attention indexer, unset by default
    "Granite4VisionModel": "main",  # (table) its downsampler and deepstack layer map, unset by default
    "xLSTMForCausalLM": "main",  # (table) num_blocks shrunk; q/k and v widths its cache rounds to 64
    "AlignModel": "main",  # (table) image embeddings as wide as the text projection, not vanishing
    "Pop2PianoForConditionalGeneration": "main",  # generate's required input_features as its docstring shapes them
    "Qwen2_5OmniThinkerModel": "main",  # a special token id the modeling code reads but the config lacks: set
    "InstructBlipVideoModel": "placeholders",  # a video token per query per frame; the frames' tower output checked
    "IdeficsModel": "frames",  # images per text with an image_attention_mask (each token to each image)
    "VibeVoiceAcousticTokenizerDecoderModel": "main",  # undocumented hidden_states as its first Conv1d takes them
    "MuseGlimmerAssistantModel": "main",  # documented widths: `dim * len(config.target_layer_ids)`, dim the width
    "Sam3TrackerModel": "main",  # backbone_feature_sizes follow the backbone's shrunk patch grid
    "Sam2Model": "main",  # per-stage widths, the neck's copy of them, feature sizes and the prompt grid follow
    # coupled widths and inputs (issue 26, branch h5-shapes)
    "ClapModel": "paired",  # a spectrogram read as an image (spec_size); the Swin stem doubles up to the width
    "SegGptModel": "main",  # documented images at the image side; images stacked along the height halve it
    "SpeechT5Model": "main",  # no prenet (its first layer a LayerNorm): hidden states in, its decoder's too
    "Xcodec2Model": "channels_last",  # a feature frame per waveform hop; a width summing two towers' follows them
    "Inkling2VisionModel": "main",  # packed pixels one merged patch per token, as documented; grid in tokens
    "Ernie4_5_VLMoeModel": "main",  # rotary sections keep the equal pair of the modeling code's own default
    "Gemma4AudioModel": "channels_last",  # mel bins its 2-D convolution subsampler implies (config names none)
    "BltModel": "main",  # a tower as wide as another's x cross_attn_k; hidden_size_global; hash buckets shrunk
    "Blip2ForImageTextRetrieval": "placeholders",  # a submodule forward reads, built under a switch: switched on
    # a video inference session by forward's annotation (frames, a point per object), each pass on a fresh copy;
    # the memory modules' widths follow the towers' shared width
    "Sam2VideoModel": "main",
    "Sam3TrackerVideoModel": "main",  # the same; its property image_size re-derives feature sizes after the patch
    "EdgeTamVideoModel": "main",  # (table) the same; its 2-D latents and key rotary grid fit the shrunk grid
    "PI0Model": "main",  # an action expert's embeddings (its width x the action chunk) and their vision-language prefix
    "PI05Model": "main",  # the same, and what the expert requires through **kwargs by its docstring (timestep_embeds)
    "VoxtralRealtimeModel": "paired",  # audio features of audio_length_per_tok mel frames per text token
    "VoxtralRealtimeForConditionalGeneration": "paired",  # the same; generate streams the new tokens from more audio
    # token ids within a vocabulary only a nested config names (78 phonemes); a vocoder's channels shrunk
    "FastSpeech2ConformerWithHifiGan": "main",
    "OneFormerModel": "main",  # a documented input's length the config fixes by its name (task_seq_len)
    "LwDetrModel": "main",  # (table) one projector feature level, as its checkpoints (the default names none)
}


@pytest.mark.parametrize("cls", sorted(RULES))
def test_builder_rules_make_hard_classes_run(found: dict[str, Any], cls: str) -> None:
    result = run_job(_job(found, cls))
    assert result["status"] == Status.SYNTHETIC, result["error"]
    detail = result["attempts"][-1]["detail"]
    assert f"inputs {RULES[cls]})" in detail, detail
    # the batch, packed rows (8, 32; 34: Inkling 2's 32 patches and a class token per image) or a video's
    # frames through an image tower (batch x 2 frames)
    assert result["output"]["shape"][0] in (2, 4, 8, 32, 34) and result["metrics"]["first_inference_s"] > 0


def test_a_mapped_class_the_package_does_not_export_is_the_librarys_miss() -> None:
    """A task mapping that names a class transformers does not export (5.25: VoxtralRealtimeTextModel)
    is the library's load error, not a harness gap; a class that exists keeps building."""
    from fleet.errors import CheckFailure
    from workers.tiny.build import class_info

    rows = architectures.select(architectures.local_listing(), "all")
    missing = [r["class"] for r in rows if r["class"] not in dir(transformers)]
    if not missing:
        pytest.skip(f"every mapped class is exported by transformers {transformers.__version__}")
    with pytest.raises(CheckFailure) as caught:
        class_info(missing[0])
    assert caught.value.kind == ErrorKind.LOAD_ERROR and "the library's" in caught.value.message
    assert class_info("BertModel")[1] == "bert"


def test_a_class_without_a_forward_of_its_own_says_so(found: dict[str, Any]) -> None:
    """BarkModel runs only through generate(): the miss says the class has no forward, not that
    an input named 'input' (nn.Module.forward's *input) is missing."""
    result = run_job(_job(found, "BarkModel"))
    assert result["error"]["kind"] == ErrorKind.HARNESS_UNSUPPORTED
    assert "defines no forward() of its own" in result["error"]["message"]


def test_a_timm_backbone_by_name_becomes_transformers_own() -> None:
    """Where a config has no use_timm_backbone switch of its own (DETR-style detectors on
    transformers 5.17: False made it ask the Hub for 'resnet50'), its default timm backbone is
    replaced by transformers' own config of that architecture, the deepest stages as many as the
    timm out_indices; a DETR built around it runs. Here on the installed release's DetrConfig()
    and OmDetTurboConfig(), whose defaults are still timm backbones."""
    import torch
    from transformers import DetrConfig, DetrModel, OmDetTurboConfig

    from workers.tiny import inputs, shrink

    assert shrink._timm_default("detr", None)  # 5.25's DETR reads the switch itself: the rule does not fire
    own = shrink._own_backbone(DetrConfig())
    assert own.model_type == "resnet" and own.out_features == ["stage1", "stage2", "stage3", "stage4"]
    swin = shrink._own_backbone(OmDetTurboConfig())  # swin_tiny_patch4_window7_224, out_indices [1, 2, 3]
    assert swin.model_type == "swin" and swin.out_features == ["stage2", "stage3", "stage4"]
    assert shrink._own_backbone(DetrConfig(use_timm_backbone=False)) is None  # already transformers' own
    config = DetrConfig(backbone_config=own)
    shrink._shrink(config, VARIANTS[0])
    model = DetrModel(config).eval()
    with torch.inference_mode():
        out = model(**inputs.make_inputs(model, torch.device("cpu")))
    assert out.last_hidden_state.shape == (2, config.num_queries, config.d_model)


def test_a_text_configs_padding_token_outside_its_vocabulary_is_zero() -> None:
    """Idefics3's and SmolVLM's default text config on transformers 5.17 names padding token
    128002 in a vocabulary of 32000: no embedding can be built. The builder makes it 0 (on the
    text config only: MusicGen's decoder embeds its padding token as vocab_size)."""
    from transformers import Idefics3Config, Idefics3Model, MusicgenDecoderConfig

    from workers.tiny.build import _pad_token

    config = tiny_config("idefics3", VARIANTS[0])
    config.text_config.pad_token_id = 128002
    _pad_token(config)
    assert config.text_config.pad_token_id == 0
    Idefics3Model(config)  # builds (AssertionError: Padding_idx must be within num_embeddings before)
    decoder = MusicgenDecoderConfig()
    _pad_token(decoder)
    assert decoder.pad_token_id == decoder.vocab_size == 2048
    assert isinstance(config, Idefics3Config)


# Vision towers whose output packs every image into one sequence, (1, patches, width): the check
# takes it as the batch's (Pixtral); MiniCPM-V's towers are fed the patches so (a strip of patches
# one patch high with each image's grid in target_sizes).
PACKED = {"PixtralVisionModel": "main", "MiniCPMOcrVisionModel": "main"}


@pytest.mark.parametrize("cls", sorted(PACKED))
def test_packed_vision_towers_run_and_their_output_is_the_batchs(found: dict[str, Any], cls: str) -> None:
    result = run_job(_job(found, cls))
    assert result["status"] == Status.SYNTHETIC, result["error"]
    assert f"inputs {PACKED[cls]})" in result["attempts"][-1]["detail"]
    shape = result["output"]["shape"]
    assert shape[0] == 1 and shape[1] % 2 == 0 and result["output"]["output_name"] == "last_hidden_state"


def test_a_model_that_samples_in_forward_is_seeded_per_pass() -> None:
    """VITS draws its durations' noise in forward: two passes of the check on the same inputs
    give the same waveform (each pass seeded, as its inputs are), which the check validates."""
    import torch

    from workers.checks.base import Bundle
    from workers.checks.forward import for_architecture
    from workers.tiny import build, inputs

    cls, _ = build.class_info("VitsModel")
    model = cls(tiny_config("vits", VARIANTS[0], cls.config_class)).eval()
    bundle = Bundle(model=model, name="t", source="synthetic", revision="r", architecture="VitsModel", task="base")
    check = for_architecture("VitsModel")
    made = inputs.make_inputs(model, torch.device("cpu"))
    with torch.inference_mode():
        first, repeat = check.infer(bundle, made), check.infer(bundle, made)
        out = check.validate(bundle, made, first, repeat)
    assert out["output_name"] == "waveform" and out["shape"][0] == 2


def test_a_layer_count_of_the_whole_depth_follows_the_shrunk_depth() -> None:
    """Gemma 4's assistant shares the KV cache of all its layers: its count of shared layers
    follows the shrunk depth (left at 30 of 2 layers, the config refused to build)."""
    from workers.tiny import build

    cls, _ = build.class_info("Gemma4UnifiedAssistantForCausalLM")
    text = tiny_config(cls.config_class.model_type, VARIANTS[0], cls.config_class).text_config
    assert text.num_kv_shared_layers == text.num_hidden_layers == 2
    assert default_config(cls.config_class.model_type, cls.config_class).text_config.num_kv_shared_layers == 30


def test_image_grid_neck_and_clip_follow_the_shrunk_towers() -> None:
    """Sizes a config derived from the full-size towers follow the shrunk ones (SAM, V-JEPA 2:
    left alone, no shrunk variant ran and their unshrunk defaults hit the 60 s time limit)."""
    sam = tiny_config("sam", VARIANTS[0])
    vision, prompt = sam.vision_config, sam.prompt_encoder_config
    assert prompt.image_embedding_size == vision.image_size // vision.patch_size == 4
    assert vision.output_channels == prompt.hidden_size == 2 * vision.num_pos_feats == 32
    vjepa = tiny_config("vjepa2", VARIANTS[0])
    assert (vjepa.crop_size, vjepa.frames_per_clip) == (32, 2 * vjepa.tubelet_size)
    assert (vjepa.pred_hidden_size, vjepa.pred_num_hidden_layers, vjepa.pred_num_attention_heads) == (32, 2, 4)
    assert default_config("vjepa2").pred_hidden_size == 384  # the default itself is left alone


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        ("GlmImageVQVAE", "defines no forward() of its own"),  # runs only through its own methods
        # an optional package the project does not install, and why (its torchvision would change the catalog)
        ("TimmWrapperModel", "needs timm, which the project does not install: it needs torchvision"),
        ("HiggsAudioV2TokenizerModel", "torchaudio"),  # a placeholder class of a missing backend
        ("DinatModel", "DinatModel requires the natten library"),  # its ImportError starts with a newline
    ],
)
def test_a_harness_gap_is_skipped_with_its_own_kind(found: dict[str, Any], cls: str, reason: str) -> None:
    result = run_job(_job(found, cls))
    assert result["status"] == Status.SKIPPED
    message = result["error"]["message"]
    assert result["error"]["kind"] == ErrorKind.HARNESS_UNSUPPORTED and reason in message
    assert "\n" not in message  # one line: the report's table row names the missing package


def test_inputs_forward_requires_by_suffix_and_the_q_former_gets_image_features() -> None:
    """More token ids and their masks where forward requires them by name (OmDet-Turbo's class
    names and task prompts); the paired plan gives the Q-Former the image features its
    cross-attention reads (encoder_hidden_states, of the documented shape), and it runs."""
    import torch

    from workers.tiny import build, inputs
    from workers.tiny.shrink import VARIANTS, tiny_config

    cls, _ = build.class_info("OmDetTurboForObjectDetection")
    model = cls(tiny_config("omdet-turbo", VARIANTS[0], cls.config_class))
    made = inputs.make_inputs(model, torch.device("cpu"))
    assert made["classes_input_ids"].shape == made["tasks_input_ids"].shape == (2, 8)
    assert torch.equal(made["classes_attention_mask"], torch.ones(2, 8, dtype=torch.long))
    assert made["classes_structure"].tolist() == [1, 1]  # one class name per image: the rows of classes_input_ids
    assert model.config.backbone_config.model_type == "swin"  # transformers' own backbone, not timm's
    qformer, _ = build.build_model("Blip2QFormerModel", torch.device("cpu"), "base")
    assert build.describe(qformer) == "shrunk default config (variant 0, inputs paired)"
    fed = inputs.make_inputs(qformer, torch.device("cpu"))
    assert fed["encoder_hidden_states"].shape == (2, 8, qformer.config.encoder_hidden_size)


def test_a_shrink_caused_failure_is_not_the_models() -> None:
    """A shrunk config that breaks the model in forward (positions shorter than the text) is
    not reported as the model's failure: its own unshrunk default config runs and is the twin."""
    import torch

    from workers.tiny import build
    from workers.tiny.shrink import SHRINK

    broken = ({**SHRINK, "max_position_embeddings": 4},)
    model, _ = build.build_model("ElectraModel", torch.device("cpu"), "base", variants=broken)
    assert model.fleet_variant == "default" and model.config.max_position_embeddings == 512
    detail = build.describe(model)
    assert detail.startswith("unshrunk default config (inputs main; every shrunk variant failed: RuntimeError"), detail


def test_a_miss_the_default_config_repeats_is_the_librarys(found: dict[str, Any]) -> None:
    """PP-OCRv6 medium's default config leaves its intra-class blocks None: built with the
    table's kernels (shrunk, and unshrunk to judge), it fails in forward both ways (its neck takes
    96 channels of a 384-channel backbone): FAILED, the library's. (DBRX was the example of a class
    that cannot be built from its default either; its config is now repaired: RULES.) A model too
    large to check its default stays the harness's gap."""
    from orchestrator.report.coverage import fault

    ocr = run_job(_job(found, "PPOCRV6MediumDetModel"))
    assert ocr["status"] == Status.FAILED and ocr["error"]["kind"] == ErrorKind.INFERENCE_ERROR, ocr["error"]
    assert fault(ocr) == "library" and "the unshrunk default config fails too" in ocr["attempts"][-1]["detail"]
    tvp = run_job(_job(found, "TvpModel"))  # its frames are not fed (no vision config names them); 167 M unshrunk
    assert tvp["status"] == Status.SKIPPED and fault(tvp) == "harness"
    assert "too large to tell whose fault" in tvp["error"]["message"]


def test_a_failure_after_the_forward_reading_a_config_attribute_the_default_lacks_is_the_librarys(
    found: dict[str, Any],
) -> None:
    """BltForCausalLM's twin runs its forward pass; its generate builds a cache that reads
    BltConfig.num_hidden_layers, which BltConfig() itself does not have: FAILED, the library's
    (the unshrunk default lacks it too), never unclassed. A twin whose config lacks an attribute
    its own default has (the shrinker's doing) would stay unclassed."""
    import torch

    from orchestrator.report.coverage import fault
    from workers.tiny import default_config_lacks
    from workers.tiny.build import build_model

    blt = run_job(_job(found, "BltForCausalLM"))
    assert blt["status"] == Status.FAILED and blt["error"]["kind"] == ErrorKind.INFERENCE_ERROR, blt["error"]
    assert "BltConfig()) has no 'num_hidden_layers' either: the library's" in blt["error"]["message"]
    assert fault(blt) == "library"
    model, _ = build_model("LlamaModel", torch.device("cpu"))
    assert default_config_lacks(model, AttributeError("'LlamaConfig' object has no attribute 'hidden_size'")) is None
    assert default_config_lacks(model, AttributeError("'BltConfig' object has no attribute 'nope'")) is None
    assert default_config_lacks(model, AttributeError("'LlamaConfig' object has no attribute 'nope'"))


def _arch_result(run_id: str, i: int, status: str, kind: str | None = None, task: str = "base") -> dict[str, Any]:
    fam = f"arch:Class{i}"
    r = base_result({"run_id": run_id, "job_id": f"{fam}@cpu", "family": fam, "device": "cpu"})
    r.update(status=status, worker="w1", delivery=1, started_at=1.0, finished_at=2.0, task=task, model_used=fam)
    r["output"] = {"output_name": "logits", "shape": [2, 8, 100], "sample": [0.1] * 8}
    r["metrics"] = {"latency_ms_p50": 1.5, "job_s": 0.2, "peak_rss_mb": 900.0}
    if kind:
        r["error"] = {"kind": kind, "message": f"RuntimeError: size {i} mismatch in layer {i % 7}"}
    return r


def test_report_at_scale_stays_small_and_keeps_harness_gaps_apart() -> None:
    tasks = sorted(REQUIRED_TASKS)
    results = []
    for i in range(1500):
        task = tasks[i % len(tasks)]
        if i % 10 == 0:
            results.append(_arch_result("r2", i, "SKIPPED", "harness_unsupported", task))
        elif i % 10 == 1:
            results.append(_arch_result("r2", i, "FAILED", "inference_error", task))
        else:
            results.append(_arch_result("r2", i, "SYNTHETIC", task=task))
    previous = {r["job_id"]: {**r, "status": "SYNTHETIC", "error": None} for r in results}
    meta = {"run_id": "r2", "started_at": 1.0, "catalog": "transformers 5.24.0 task mappings", "transformers": "5.24.0"}
    data = assemble(meta, results, "r1", previous, [])
    cov = data["architectures"]
    assert cov["jobs"] == 1500 and cov["totals"] == {
        "passed": 1200,
        "failed": 150,
        "harness": 150,
        "skipped": 0,
        "lost": 0,
    }
    assert {t["task"] for t in cov["by_task"]} == REQUIRED_TASKS
    assert sum(t["harness"] for t in cov["by_task"]) == 150
    # a harness gap is never a regression; a model failure is
    regressed = {r["job_id"] for r in data["regressions"]}
    assert len(regressed) == 150 and all(int(j.split("Class")[1].split("@")[0]) % 10 == 1 for j in regressed)
    assert cov["failures"][0]["kind"] == "inference_error" and cov["harness_gaps"][0]["kind"] == "harness_unsupported"
    assert sum(g["count"] for g in cov["failures"]) == 150  # digits folded: a handful of groups
    assert len(cov["failures"]) <= 7
    t0 = time.perf_counter()
    text = render_markdown(data)
    took = time.perf_counter() - t0
    assert len(text.encode()) < 2_000_000
    assert (
        text.index("## Coverage per task and device")
        < text.index("## Failures by kind")
        < text.index("## Harness gaps")
    )
    assert f"| {md('masked_lm')} | cpu | {1500 // len(tasks) + 1} |" in text or f"| {md('masked_lm')} | cpu |" in text
    assert text.count(" | cpu | ") == len(tasks)  # one coverage row per task, no per-job rows
    # every miss is classed: the harness's gaps apart from the failures no default config was tried on
    assert cov["faults"] == {"harness": 150, "unclassed": 150} and len(cov["misses"]) == 300
    assert "## Misses (300): whose fault each is (harness 150, unclassed 150)" in text
    assert "| Class1 | inference\\_error | unclassed | RuntimeError: size 1 mismatch" in text
    print(f"rendered {len(text)} characters in {took:.3f} s")


def test_cli_rejects_an_unknown_architecture_in_one_line(tmp_path: Path) -> None:
    env = {"FLEET_HOME": str(tmp_path / "state"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    res = orchestrator("run", "--architectures", "NoSuchModel", "--devices", "cpu", env=env)
    assert res.returncode == 2, res.stderr
    assert "NoSuchModel" in res.stderr and "Traceback" not in res.stderr
    res = orchestrator("run", "--architectures", "BertModel", "--concurrency", "0", env=env)
    assert res.returncode == 2 and "--concurrency" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.service
def test_cli_run_architectures_end_to_end(tmp_path: Path) -> None:
    env = {"FLEET_HOME": str(tmp_path / "state"), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    res = orchestrator(
        "run",
        "--architectures",
        "BertModel,ViTForImageClassification,GlmImageVQVAE,VoxtralRealtimeTextModel",
        "--devices",
        "cpu",
        env=env,
    )
    assert res.returncode == 5, res.stderr  # Voxtral text fails (the library's); a harness gap does not fail the run
    md_path, json_path, _ = (Path(p) for p in res.stdout.split())
    data = json.loads(json_path.read_text())
    statuses = {r["job_id"]: r["status"] for r in data["results"]}
    assert statuses == {
        "arch:BertModel@cpu": "SYNTHETIC",
        "arch:ViTForImageClassification@cpu": "SYNTHETIC",
        "arch:GlmImageVQVAE@cpu": "SKIPPED",
        "arch:VoxtralRealtimeTextModel@cpu": "FAILED",
    }
    assert data["transformers"] == transformers.__version__
    assert data["architectures"]["totals"]["harness"] == 1
    assert "## Harness gaps (1)" in md_path.read_text()
    # a twin that cannot be built from its seeded config is not rerun: a fresh process fails alike
    (broken,) = (r for r in data["results"] if r["job_id"] == "arch:VoxtralRealtimeTextModel@cpu")
    assert broken["error"]["kind"] == "load_error" and not broken.get("reruns"), broken.get("reruns")
    # an architecture run sizes its pool from the cores: seeded tiny models are interpreter-bound
    (log,) = (tmp_path / "state" / "logs").glob("workers-*.log")
    text = log.read_text()
    assert f" -c {os.cpu_count()} -P prefork" in text
    assert "replacing pool process" not in text


def test_cli_submit_reads_the_list_a_worker_published(redis_url: str, start_worker: Any) -> None:
    start_worker(redis_url)
    env = {"FLEET_REDIS_URL": redis_url}
    res = orchestrator("submit", "--architectures", "BertForMaskedLM", "--devices", "cpu", "--wait", env=env)
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.split()[0]
    shown = orchestrator("report", run_id, "--format", "json", env=env)
    data = json.loads(shown.stdout)
    assert [(r["job_id"], r["status"]) for r in data["results"]] == [("arch:BertForMaskedLM@cpu", "SYNTHETIC")]
    assert data["transformers"] == transformers.__version__


def test_adhoc_model_from_the_hub_stand_in_gets_the_check_of_its_architecture(
    fake_hub: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.models import save_tiny
    from workers import hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("FLEET_HUB_TIMEOUT", "2")
    hub._probe_cache.clear()
    repo = save_tiny("llama", tmp_path / "repo")
    fake_hub.add("someone/tiny-llama", repo)
    catalog = architectures.adhoc_catalog(["someone/tiny-llama"])
    (job,) = plan_jobs("run-adhoc", catalog, None, ["cpu"], RunSettings(), pins=[])
    assert job["job_id"] == "model:someone/tiny-llama@cpu" and job["family_spec"]["check"] == "auto"
    assert job_problem(job) is None
    result = run_job(job)
    # random tiny weights: the generate check's causal LM gate fails them (workers/checks/task_gates.py)
    assert result["status"] == Status.FAILED and result["error"]["kind"] == "quality_gate", json.dumps(
        [result["error"], result["attempts"]]
    )[:900]
    assert result["task"] == "causal_lm" and result["architecture"] == "LlamaForCausalLM"
    assert result["source"] == "hub" and len(result["revision"]) == 40
    assert (
        result["weights_sha256"] == __import__("hashlib").sha256((repo / "model.safetensors").read_bytes()).hexdigest()
    )
    assert result["attempts"][-1]["outcome"] == "loaded"
    assert len(result["output"]["generated"]) == 2  # the generate check: the task generates


def test_adhoc_model_with_a_bad_name_is_refused_in_one_line() -> None:
    for bad in ("no-slash", "a/b@", "../etc/passwd", "a/b c"):
        with pytest.raises(FleetError, match="expected ORG/NAME"):
            architectures.adhoc_catalog([bad])
    res = orchestrator("submit", "--model", "not a model", "--redis-url", "redis://127.0.0.1:1")
    assert res.returncode == 2 and "expected ORG/NAME" in res.stderr and "Traceback" not in res.stderr


def test_survey_miss_table_classes_every_miss_and_names_its_run() -> None:
    """bench.architecture_survey --misses-md: every class that did not pass, sorted by whose
    fault, kind and class; a child killed at the hard limit is the host's; the header names the
    version, command, commit, start and load of the run."""
    from bench.architecture_survey import misses_md

    rows = [
        {"class": "BertModel", "status": "SYNTHETIC", "kind": None, "fault": None},
        {"class": "ZModel", "status": "SKIPPED", "kind": "harness_unsupported", "fault": "harness", "message": "a\nb"},
        {"class": "BltModel", "status": "crashed", "kind": "crashed", "message": "rc -9"},
        {"class": "AModel", "status": "FAILED", "kind": "load_error", "fault": "library", "message": "x | y"},
    ]
    meta = {
        "transformers": "5.17.0",
        "torch": "2.13.0",
        "command": "scripts/side_transformers.sh 5.17.0 all 2",
        "commit": "abc1234",
        "started": "2026-12-07 11:24 UTC",
        "procs": 2,
        "wall_s": 2774.0,
        "load_start": [0.9, 0.5, 0.3],
        "load_end": [7.1, 8.3, 7.8],
    }
    text = misses_md(rows, meta)
    assert text.startswith("# Architecture misses, transformers 5.17.0 (`scripts/side_transformers.sh 5.17.0 all 2`")
    assert "(3 of 4), with whose fault it is: harness 1, library 1, host 1." in text
    assert "at `abc1234`" in text and "load average 0.9 at its start, 7.1 at its end: 1 of 4 passed" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "Class" not in line]
    assert [line.split(" | ")[0] for line in table] == ["| ZModel", "| BltModel", "| AModel"]  # harness, host, library
    assert "| crashed | host | rc -9 |" in table[1] and table[0].endswith("| a |") and "x / y" in table[2]


def test_a_value_the_config_validator_names_is_passed_to_the_sub_config_declaring_it() -> None:
    """Gemma 4's assistant on 5.25: its own default config refuses itself ("hidden_size_per_layer_input
    must be 0, got 256", then enable_moe_block, ... on its text config). default_config passes each value
    the validator names to the sub-config that declares it, until the config builds."""
    import transformers

    from workers.tiny import shrink

    if not hasattr(transformers, "Gemma4AssistantConfig"):
        pytest.skip("no Gemma 4 assistant in this transformers")
    with pytest.raises(Exception, match="must be 0, got 256"):
        transformers.Gemma4AssistantConfig()
    config = shrink.default_config("gemma4_assistant")
    assert config.text_config.hidden_size_per_layer_input == 0 and config.text_config.enable_moe_block is False


def test_a_config_lacking_what_the_model_reads_inherits_it_or_stays_refused() -> None:
    """repair_from_error: DBRX's attention config has no rope_theta (the enclosing config's rotary
    parameters do): it is inherited and the model builds; an error that says nothing repairable is
    refused (False), so the builder reports it."""
    from transformers import DbrxConfig, DbrxModel

    from workers.tiny import shrink

    config = DbrxConfig(d_model=32, n_heads=4, n_layers=1, max_seq_len=16, vocab_size=64)
    config.attn_config.kv_n_heads = 2
    config.ffn_config.ffn_hidden_size, config.ffn_config.moe_num_experts = 64, 2
    with pytest.raises(AttributeError, match="rope_theta") as info:
        DbrxModel(config)
    assert shrink.repair_from_error(config, info.value)
    assert config.attn_config.rope_theta == config.rope_parameters["rope_theta"]
    DbrxModel(config)
    assert not shrink.repair_from_error(config, ValueError("something else"))


def test_a_package_the_project_does_not_install_is_the_harness_s_miss() -> None:
    """VibeVoice's generate() builds its default scheduler from diffusers (5.25's message); the
    project does not install it: the reason says so, and a job ends SKIPPED as the harness's."""
    from workers.tiny import missing_package

    exc = ImportError(
        "The default VibeVoice noise scheduler (`DPMSolverMultistepScheduler`) requires `diffusers`. "
        "Install it with `pip install diffusers`, or pass a custom noise scheduler."
    )
    why = missing_package(exc)
    assert why is not None and why.startswith("needs diffusers, which the project does not install")
    assert missing_package(ImportError("requires `torch`")) is None


def test_the_repair_pass_fills_what_a_default_leaves_unset_and_only_it() -> None:
    """Step3p7's text config leaves its sliding window None (its mask reads it whatever the layer
    types); dots.llm1 its experts, top-k and shared experts. The repair pass sets them; the plain
    shrink leaves them (a None may mean "none" where a class passes without repairs)."""
    import transformers

    from workers.tiny import shrink

    if not hasattr(transformers, "Step3p7Config"):
        pytest.skip("no Step3p7 in this transformers")
    plain, repaired = (shrink.tiny_config("step3p7", VARIANTS[0], repair=r).text_config for r in (False, True))
    assert plain.sliding_window is None and repaired.sliding_window == shrink.SLIDING_WINDOW
    plain, repaired = (shrink.tiny_config("dots1", VARIANTS[0], repair=r) for r in (False, True))
    assert (plain.n_routed_experts, plain.num_experts_per_tok, plain.n_shared_experts) == (None, None, None)
    assert (repaired.n_routed_experts, repaired.num_experts_per_tok, repaired.n_shared_experts) == (4, 2, 1)


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        ("PeAudioVideoModel", "needs timm"),  # a package not installed: every config needs it
        # an input the harness does not make for any config: a video session prompted by text (per-object outputs)
        ("Sam3VideoModel", "Sam3VideoInferenceSession is prompted by text"),
    ],
)
def test_a_gap_no_config_can_close_ends_the_build_at_once(cls: str, reason: str) -> None:
    """A package the project does not install, or a main input kind the harness does not make,
    does not depend on the config: the builder stops there instead of trying every shrink variant,
    the repair pass and the default config (PeAudioVideoModel took 28.8 s to say it needs timm,
    PI0Model, whose input is made now, 14.1 s, in the CLI run of the whole matrix)."""
    import torch

    from workers.tiny import Unsupported, build

    with pytest.raises(Unsupported) as caught:
        build.build_model(cls, torch.device("cpu"))
    assert caught.value.any_config and reason in caught.value.message


def test_a_video_inference_session_is_copied_for_each_pass() -> None:
    """Forward stores its outputs and memory in a video model's inference session: each pass runs
    on a copy of the session as made (inputs.fresh), so the check's second pass computes its
    output again instead of reading the first pass's stored masks, and the session made stays
    as it was."""
    import torch

    from workers.tiny import build
    from workers.tiny.inputs import fresh, make_inputs

    model, _ = build.build_model("Sam2VideoModel", torch.device("cpu"))
    inputs = make_inputs(model, torch.device("cpu"))
    session = inputs["inference_session"]
    with torch.inference_mode():
        first, second = (model(**fresh(inputs)) for _ in range(2))
    assert session.output_dict_per_obj[0]["cond_frame_outputs"] == {} and session.obj_with_new_inputs == [0, 1]
    assert first.pred_masks.shape[0] == 2 and torch.equal(first.pred_masks, second.pred_masks)
    assert first.pred_masks is not second.pred_masks


def test_a_sub_config_is_the_configs_own_default_for_an_empty_one() -> None:
    """transformers 5.17: Granite 4 Vision's default text config is Llama's (its attention reads
    Granite's attention_multiplier), DiffusionGemma's vision config None; the repair pass puts in
    what the config makes of `{}` (its own text config, Gemma 4's vision config). Exercised on the
    installed release's objects: a Llama text config put into Granite 4 Vision's config."""
    import transformers

    from workers.tiny import shrink

    if not hasattr(transformers, "Granite4VisionConfig"):
        pytest.skip("no Granite 4 Vision in this transformers")
    config = transformers.Granite4VisionConfig()
    own = type(config.text_config)
    config.text_config = transformers.LlamaConfig()
    shrink._own_sub_configs(config)
    assert type(config.text_config) is own and own.__name__ == "Granite4VisionTextConfig"


def test_a_composite_without_defaults_gets_its_docstrings_sub_configs() -> None:
    """transformers 5.17's encoder-decoder configs refuse to be built without both sub-configs
    (has_no_defaults_at_init); default_config gives them the ones their docstring example builds
    (`config_encoder = BertConfig()`). Exercised on 5.25's class with the 5.17 flag set."""
    from transformers import EncoderDecoderConfig, VisionTextDualEncoderConfig

    from workers.tiny import shrink

    for base, want in ((EncoderDecoderConfig, ("bert", "bert")), (VisionTextDualEncoderConfig, ("vit", "bert"))):
        strict = type("Strict", (base,), {"has_no_defaults_at_init": True, "__doc__": base.__doc__})
        overrides: dict[str, Any] = {}
        assert shrink._documented_subs(strict, base.model_type, overrides)
        assert tuple(v["model_type"] for v in overrides.values()) == want, overrides
        assert not shrink._documented_subs(strict, base.model_type, overrides)  # given already: nothing added


def test_a_vocoder_keeps_two_channels_a_stage() -> None:
    """A HiFi-GAN's upsample_initial_channel is shrunk (FastSpeech 2's 512 made the job time out
    under load), at least 2 channels at its last upsampling stage."""
    from transformers import FastSpeech2ConformerHifiGanConfig

    from workers.tiny import shrink

    config = shrink.tiny_config("fastspeech2_conformer_with_hifigan", VARIANTS[0])
    assert config.vocoder_config.upsample_initial_channel == 32
    six = FastSpeech2ConformerHifiGanConfig(upsample_rates=[2] * 6, upsample_kernel_sizes=[4] * 6)
    shrink._shrink(six, VARIANTS[0])
    assert six.upsample_initial_channel == 128


def test_a_codec_doubling_its_filters_per_stage_keeps_its_stages_one_block_each() -> None:
    """VibeVoice's acoustic tokenizer doubles num_filters at each of its six downsampling stages
    (2048 channels deep, 175 M parameters as the width keys left it: a timeout under load): its
    deepest stage 4 times the shrunk width, one block a stage."""
    import transformers

    from workers.tiny import shrink

    if not hasattr(transformers, "VibeVoiceAcousticTokenizerDecoderConfig"):
        pytest.skip("no VibeVoice in this transformers")
    config = shrink.tiny_config("vibevoice_acoustic_tokenizer_decoder", VARIANTS[0])
    assert config.num_filters * 2 ** len(config.downsampling_ratios) == 4 * 32 and set(config.depths) == {1}
