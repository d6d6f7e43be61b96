"""Causal LM: greedy generation of N new tokens, repeated to prove determinism."""

from __future__ import annotations

from typing import Any

import torch

from workers import quality
from workers.checks.base import Bundle, Check, invalid, require_finite, require_shape, sample

PROMPT = "The quick brown fox jumps over the lazy dog and"
NEW_TOKENS = 8


class CausalLMCheck(Check):
    name = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    unit = "tokens"
    fingerprint_fields = {"tokens": None, "logits_sample": 5e-3}  # greedy tokens exact

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        enc = bundle.tokenizer(PROMPT, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        return bundle.model.generate(**self.generate_kwargs(bundle, inputs))

    def generate_kwargs(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        tok = bundle.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return {
            **inputs,
            "max_new_tokens": NEW_TOKENS,
            "min_new_tokens": NEW_TOKENS,
            "do_sample": False,
            "pad_token_id": pad,
        }

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        prompt_len = inputs["input_ids"].shape[1]
        require_shape("generated ids", first, (1, prompt_len + NEW_TOKENS))
        if not torch.equal(first, repeat):
            raise invalid("greedy generation differs between two runs", first=first.tolist(), repeat=repeat.tolist())
        logits = bundle.model(**inputs).logits
        require_finite("logits", logits)
        new = first[0, prompt_len:].tolist()
        return {"tokens": new, "text": bundle.tokenizer.decode(new), "logits_sample": sample(logits[0, -1])}

    def gate_texts(self, bundle: Bundle) -> list[str]:
        return [quality.LM_TEXT]

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        loss, tokens = quality.causal_lm_loss(bundle.model, bundle.tokenizer)
        vocab = int(bundle.model.get_output_embeddings().weight.shape[0])
        return quality.lm_gate(loss, tokens, vocab, quality.LM_FRACTION, text="LM_TEXT")

    def units(self, inputs: dict[str, Any], output: Any) -> float:
        return float(NEW_TOKENS)
