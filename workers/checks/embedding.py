"""Sentence embeddings (MiniLM): mean pooling, unit norm, and the semantic-margin quality gate over
several sentence triples. The known answer (the anchor sentence's embedding head, from
sentence-transformers) is a pin in fleet/pins.toml, compared like every other pin (fleet/pins.py)."""

from __future__ import annotations

from typing import Any

import torch

from workers import quality
from workers.checks.base import Bundle, Check, invalid, require_finite, require_shape, sample

ANCHOR = "A man is eating food."
CLOSE = "A man is eating a piece of bread."
FAR = "The stock market fell sharply today."


def embed(bundle: Bundle, inputs: dict[str, Any]) -> torch.Tensor:
    hidden = bundle.model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


class EmbeddingCheck(Check):
    name = "embedding"
    auto_class = "AutoModel"
    unit = "sentences"
    fingerprint_fields = {"embedding_sample": 1e-4}  # the anchor sentence's first 16 dimensions

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        enc = bundle.tokenizer([ANCHOR, CLOSE, FAR], padding=True, truncation=True, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        return embed(bundle, inputs)

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        hidden = bundle.model.config.hidden_size
        require_shape("embeddings", first, (3, hidden))
        require_finite("embeddings", first)
        if not torch.allclose(first, repeat, atol=1e-5):
            raise invalid("embeddings differ between two runs", max_diff=float((first - repeat).abs().max()))
        close = float(first[0] @ first[1])
        far = float(first[0] @ first[2])
        out: dict[str, Any] = {
            "similarity_close": round(close, 4),
            "similarity_far": round(far, 4),
            "embedding_sample": sample(first[0], 16),
        }
        return out

    def gate_texts(self, bundle: Bundle) -> list[str]:
        return quality.flatten(quality.EMBEDDING_TRIPLES)

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        dev = inputs["input_ids"].device
        enc = bundle.tokenizer(quality.flatten(quality.EMBEDDING_TRIPLES), padding=True, return_tensors="pt")
        keys = ("input_ids", "attention_mask", "token_type_ids")
        vectors = embed(bundle, {k: v.to(dev) for k, v in enc.items() if k in keys})
        return quality.margin_gate(quality.triple_margins(vectors), quality.EMBEDDING_MARGIN, "sentence triples")

    def distinct_outputs(self, bundle: Bundle, inputs: dict[str, Any], first: Any) -> list[tuple[str, torch.Tensor]]:
        return [("embeddings", first)]  # three different sentences

    def units(self, inputs: dict[str, Any], output: Any) -> float:
        return float(output.shape[0])
