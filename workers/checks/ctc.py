"""wav2vec2 CTC: logits and greedy decoding of a short committed recording of a known
sentence; the transcript's character error rate is the quality gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workers import quality
from workers.checks.base import Bundle, Check, invalid, require_finite, sample

SAMPLE_RATE = 16_000


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
    fingerprint_fields = {"transcript": None, "logits_sample": 5e-3}

    def load_preprocessing(self, path: Path) -> tuple[Any, Any]:
        from transformers import AutoFeatureExtractor, AutoTokenizer

        return AutoTokenizer.from_pretrained(path), AutoFeatureExtractor.from_pretrained(path)

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        return {"input_values": input_values(bundle, quality.speech_sample()).to(device)}

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
        ids = self.infer(bundle, inputs).argmax(-1)[0]
        return quality.ctc_gate(bundle.tokenizer.decode(ids.tolist(), skip_special_tokens=True))

    def distinct_outputs(self, bundle: Bundle, inputs: dict[str, Any], first: Any) -> list[tuple[str, torch.Tensor]]:
        return [("logits per frame", first[0])]  # every frame hears another stretch of the recording

    def units(self, inputs: dict[str, Any], output: Any) -> float:
        return inputs["input_values"].shape[-1] / SAMPLE_RATE
