"""T5-style seq2seq: greedy generation from an encoder input."""

from __future__ import annotations

from typing import Any

import torch

from workers import quality
from workers.checks.base import Bundle, Check, invalid, require_finite, sample

SOURCE = "translate English to German: The house is wonderful."
NEW_TOKENS = 8


class Seq2SeqCheck(Check):
    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    unit = "tokens"
    fingerprint_fields = {"tokens": None, "logits_sample": 5e-3}

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        enc = bundle.tokenizer(SOURCE, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        return bundle.model.generate(**self.generate_kwargs(bundle, inputs))

    def generate_kwargs(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, "max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}

    def forward_inputs(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        """The encoder input with the first source tokens as decoder input: a fixed teacher-forced pass."""
        return {**inputs, "decoder_input_ids": inputs["input_ids"][:, :4]}

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        if first.dim() != 2 or first.shape[0] != 1 or first.shape[1] < 2:
            raise invalid(f"generated ids have shape {list(first.shape)}", shape=list(first.shape))
        if not torch.equal(first, repeat):
            raise invalid("greedy generation differs between two runs", first=first.tolist(), repeat=repeat.tolist())
        out = bundle.model(**inputs, decoder_input_ids=first)
        require_finite("logits", out.logits)
        ids = first[0].tolist()
        return {
            "tokens": ids,
            "text": bundle.tokenizer.decode(ids, skip_special_tokens=True),
            "logits_sample": sample(out.logits[0, -1]),
        }

    def gate_texts(self, bundle: Bundle) -> list[str]:
        _task, source, target = quality.seq2seq_pair(bundle.tokenizer)
        return [source, target]

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        task, source, target = quality.seq2seq_pair(bundle.tokenizer)
        loss, tokens = quality.seq2seq_loss(bundle.model, bundle.tokenizer, source, target)
        vocab = int(bundle.model.get_output_embeddings().weight.shape[0])
        return quality.lm_gate(loss, tokens, vocab, quality.SEQ2SEQ_FRACTION, task=task)

    def units(self, inputs: dict[str, Any], output: Any) -> float:
        return float(output.shape[1] - 1)
