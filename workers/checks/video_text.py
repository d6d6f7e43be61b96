"""X-CLIP video-text similarity on generated frames and a few prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workers import quality
from workers.checks.base import Bundle, Check, invalid, require_finite, require_shape, sample

PROMPTS = ["a person playing guitar", "a dog running on the beach", "someone cooking in a kitchen"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def frames(num_frames: int, size: int) -> torch.Tensor:
    """A bright square moving across a gradient: (frames, 3, size, size) in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for i in range(num_frames):
        img = torch.stack([x, y, (x + y) / 2]).clone()
        s = max(size // 4, 1)
        off = int((size - s) * i / max(num_frames - 1, 1))
        img[:, off : off + s, off : off + s] = 1.0
        out.append(img)
    return torch.stack(out)


class VideoTextCheck(Check):
    name = "video_text"
    auto_class = "AutoModel"
    unit = "videos"
    fingerprint_fields = {"probabilities": 1e-3}

    def load_preprocessing(self, path: Path) -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, AutoTokenizer

        return AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        vision = bundle.model.config.vision_config
        video = frames(vision.num_frames, vision.image_size)
        mean = getattr(bundle.processor, "image_mean", None) or CLIP_MEAN
        std = getattr(bundle.processor, "image_std", None) or CLIP_STD
        video = (video - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        text = bundle.tokenizer(PROMPTS, padding=True, return_tensors="pt")
        return {
            "pixel_values": video.unsqueeze(0).to(device),
            "input_ids": text["input_ids"].to(device),
            "attention_mask": text["attention_mask"].to(device),
        }

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        return bundle.model(**inputs).logits_per_video

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        require_shape("logits_per_video", first, (1, len(PROMPTS)))
        require_finite("logits_per_video", first)
        if not torch.allclose(first, repeat, atol=1e-4):
            raise invalid("similarities differ between two runs", first=first, repeat=repeat)
        probs = first.softmax(-1)[0]
        return {
            "probabilities": [round(float(p), 4) for p in probs],
            "best_prompt": PROMPTS[int(probs.argmax())],
            "logits_sample": sample(first[0]),
        }

    def distinct_outputs(self, bundle: Bundle, inputs: dict[str, Any], first: Any) -> list[tuple[str, torch.Tensor]]:
        return [("logits_per_video per prompt", first[0].unsqueeze(-1))]  # three different prompts

    def gate_texts(self, bundle: Bundle) -> list[str]:
        return quality.flatten(quality.PROMPT_TRIPLES)

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        """The text tower's margin on prompt triples. Video-text ranking is not gated: the
        generated clips (a moving square) match none of the prompts, so no ranking of them
        says anything about the weights."""
        dev = inputs["input_ids"].device
        enc = bundle.tokenizer(quality.flatten(quality.PROMPT_TRIPLES), padding=True, return_tensors="pt")
        out = bundle.model.get_text_features(
            input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev)
        )
        vectors = out if isinstance(out, torch.Tensor) else out.pooler_output
        return quality.margin_gate(quality.triple_margins(vectors), quality.TEXT_MARGIN, "prompt triples")
