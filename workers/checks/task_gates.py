"""The quality gate of an architecture job (the forward and generate checks: families with
check "forward"/"generate" and ad hoc `--model` jobs), chosen by the task of the class loaded:

    causal_lm    mean next-token loss on LM_TEXT <= LM_FRACTION x ln V       (tokenizer needed)
    seq2seq_lm   mean target loss (span corruption / mask infilling / copy)   (tokenizer needed)
    masked_lm    mean loss on masked word-pieces of LM_TEXT <= MLM_FRACTION x ln V
    ctc          character error rate on the committed recording            (tokenizer needed)
    base         semantic margin of a text encoder: proof when it holds, nothing when it misses
    other tasks  no gate: quality.no_gate("no quality gate for task X"), so never REAL

The figures and bounds are workers/quality.py's, calibrated there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from workers import quality
from workers.checks.base import Bundle

# Files whose presence means the checkpoint ships a tokenizer (each is among the files the
# resolver hashes, workers.resolver.PREPROCESSING_FILES).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
)
ENCODER_WHY = "below the bound proves nothing for a text encoder not tuned for sentence similarity"


def load_tokenizer(path: Path) -> Any:
    """The checkpoint's own tokenizer, or None when it ships none that loads (its task then has
    no text gate, and the record says so)."""
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception:  # a tokenizer that does not load is no gate, never a failed model
        return None


def task_of(bundle: Bundle, task: str) -> str:
    """The task of what was loaded: the job's, else the loaded class's ('' when unknown)."""
    if task:
        return task
    from workers.tiny.tasks import task_of_class

    return task_of_class(type(bundle.model).__name__) or ""


def _has_head(model: Any) -> bool:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head is not None and getattr(head, "weight", None) is not None


def gate_of(bundle: Bundle, task: str) -> tuple[str | None, str]:
    """(the gate for this bundle and task, or None with the reason there is none)."""
    model, tok = bundle.model, bundle.tokenizer
    if task not in ("causal_lm", "seq2seq_lm", "masked_lm", "ctc", "base"):
        return None, f"no quality gate for task {task or 'unknown'}"
    if tok is None:
        return None, f"no quality gate for task {task}: no tokenizer ships with the weights"
    if task in ("causal_lm", "seq2seq_lm", "masked_lm") and not _has_head(model):
        return None, f"no quality gate for task {task}: {type(model).__name__} has no output embeddings"
    if task == "masked_lm" and getattr(tok, "mask_token_id", None) is None:
        return None, "no quality gate for task masked_lm: the tokenizer has no mask token"
    main = getattr(model, "main_input_name", "input_ids")
    if task == "ctc" and main != "input_values":
        return None, f"no quality gate for task ctc: {type(model).__name__} takes {main}, not a waveform"
    if task == "base" and (main != "input_ids" or getattr(model.config, "is_encoder_decoder", False)):
        return None, f"no quality gate for task base: {type(model).__name__} is not a text encoder"
    return task, ""


def texts(bundle: Bundle, task: str) -> list[str]:
    """The texts the gate feeds through the tokenizer (held to a faithful round trip by measure)."""
    gate, _ = gate_of(bundle, task)
    if gate in ("causal_lm", "masked_lm"):
        return [quality.LM_TEXT]
    if gate == "seq2seq_lm":
        _sub, source, target = quality.seq2seq_pair(bundle.tokenizer)
        return [source, target]
    if gate == "base":
        return quality.flatten(quality.EMBEDDING_TRIPLES)
    return []


def _vocab(model: Any) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def measure(bundle: Bundle, task: str) -> dict[str, Any]:
    """The quality record of the bundle for its task (runs under inference_mode)."""
    gate, why = gate_of(bundle, task)
    model, tok = bundle.model, bundle.tokenizer
    if gate is None:
        return quality.no_gate(why, task=task or None)
    if gate == "causal_lm":
        loss, n = quality.causal_lm_loss(model, tok)
        return quality.lm_gate(loss, n, _vocab(model), quality.LM_FRACTION, text="LM_TEXT")
    if gate == "seq2seq_lm":
        sub, source, target = quality.seq2seq_pair(tok)
        loss, n = quality.seq2seq_loss(model, tok, source, target)
        return quality.lm_gate(loss, n, _vocab(model), quality.SEQ2SEQ_FRACTION, task=sub)
    if gate == "masked_lm":
        loss, n = quality.masked_lm_loss(model, tok)
        return quality.lm_gate(loss, n, _vocab(model), quality.MLM_FRACTION, text="LM_TEXT", every=quality.MLM_EVERY)
    if gate == "ctc":
        from workers.checks.ctc import input_values

        values = input_values(bundle, quality.speech_sample()).to(quality.model_device(model))
        ids = model(input_values=values).logits.argmax(-1)[0]
        return quality.ctc_gate(tok.decode(ids.tolist(), skip_special_tokens=True))
    return _encoder_margin(bundle)


def _encoder_margin(bundle: Bundle) -> dict[str, Any]:
    from workers.checks.embedding import embed

    dev = quality.model_device(bundle.model)
    enc = bundle.tokenizer(quality.flatten(quality.EMBEDDING_TRIPLES), padding=True, return_tensors="pt")
    keys = ("input_ids", "attention_mask", "token_type_ids")
    try:
        vectors = embed(bundle, {k: v.to(dev) for k, v in enc.items() if k in keys})
    except (TypeError, ValueError, AttributeError, RuntimeError) as exc:  # wants more than text: no gate
        return quality.no_gate(
            f"no quality gate for task base: {type(bundle.model).__name__} does not embed text alone "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        )
    if not isinstance(vectors, torch.Tensor) or not bool(torch.isfinite(vectors).all()):
        return quality.no_gate("no quality gate for task base: the encoder gave no finite embedding")
    q = quality.margin_gate(quality.triple_margins(vectors), quality.EMBEDDING_MARGIN, "sentence triples")
    return quality.not_proven(q, ENCODER_WHY)
