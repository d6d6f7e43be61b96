"""wav2vec2 CTC: logits and greedy decoding of a short recording of a known sentence (real
weights; its character error rate is the quality gate), or of a generated chirp (synthetic)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from workers import quality
from workers.checks.base import Bundle, Check, invalid, require_finite, sample

SAMPLE_RATE = 16_000


def waveform(seconds: float = 1.0) -> torch.Tensor:
    """A rising chirp with a little deterministic noise: speech-like energy, no download."""
    n = int(SAMPLE_RATE * seconds)
    t = torch.arange(n, dtype=torch.float32) / SAMPLE_RATE
    f0, f1 = 200.0, 2000.0
    phase = 2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    gen = torch.Generator().manual_seed(0)
    return 0.5 * torch.sin(phase) + 0.01 * torch.randn(n, generator=gen)


def input_values(bundle: Bundle, wave: torch.Tensor) -> torch.Tensor:
    if bundle.processor is not None:
        values: torch.Tensor = bundle.processor(
            wave.numpy(), sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_values
        return values
    return ((wave - wave.mean()) / (wave.std() + 1e-7)).unsqueeze(0)


class CTCCheck(Check):
    name = "ctc"
    auto_class = "AutoModelForCTC"
    unit = "audio_s"

    def load_preprocessing(self, path: Path) -> tuple[Any, Any]:
        from transformers import AutoFeatureExtractor, AutoTokenizer

        return AutoTokenizer.from_pretrained(path), AutoFeatureExtractor.from_pretrained(path)

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        wave = waveform() if bundle.synthetic else quality.speech_sample()
        return {"input_values": input_values(bundle, wave).to(device)}

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        return bundle.model(**inputs).logits

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        vocab = bundle.model.config.vocab_size
        if first.dim() != 3 or first.shape[0] != 1 or first.shape[2] != vocab or first.shape[1] < 10:
            raise invalid(
                f"logits have shape {list(first.shape)}, expected [1, frames>=10, {vocab}]", shape=list(first.shape)
            )
        require_finite("logits", first)
        if not torch.allclose(first, repeat, atol=1e-4):
            raise invalid("logits differ between two runs", max_diff=float((first - repeat).abs().max()))
        ids = first.argmax(-1)[0]
        return {
            "frames": int(first.shape[1]),
            "transcript": bundle.tokenizer.decode(ids.tolist()),
            "logits_sample": sample(first[0, 0]),
        }

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        if bundle.synthetic:  # the timed input is the chirp: score the speech sample on its own
            values = input_values(bundle, quality.speech_sample())
            inputs = {"input_values": values.to(inputs["input_values"].device)}
        ids = self.infer(bundle, inputs).argmax(-1)[0]
        transcript = bundle.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
        return quality.gate(
            "character_error_rate",
            quality.cer(transcript, quality.SPEECH_TEXT),
            quality.CER_BOUND,
            f"greedy CTC transcript of {quality.SPEECH_FILE} against {quality.SPEECH_TEXT!r}",
            higher_is_better=False,
            transcript=transcript[:200],
        )

    def units(self, inputs: dict[str, Any], output: Any) -> float:
        return inputs["input_values"].shape[-1] / SAMPLE_RATE
