"""Quality gates: evidence that loaded weights are pretrained, not merely complete.

Integrity proves which bytes were loaded; these gates show the bytes know something. Each
gate is one figure on fixed inputs kept here as constants, compared with a bound that is
relative (to ln V for language models) so it holds for any vocabulary size. The bounds
were calibrated by `python -m bench.quality_calibration` (figures beside each bound and in
BENCHMARKS.md): real weights on one side, random, zero, layer-shuffled and partially random
weights of the same architecture on the other.

A check's quality() returns one record (a dict): gate(...)'s, or no_gate(...)'s where the
check has no gate for what it loaded. measure.benchmark records it in output["quality"], and
enforce(), the job's quality gate, fails the job with `quality_gate` when its bound did not
hold. The record's `passed` is the contract every later stage reads:

    True   a bound was checked and held: the only value that lets a result be REAL
    False  a bound was checked and missed (or the tokenizer garbles the gate's text): FAILED
    None   no bound was checked: synthetic weights (`informational: True`), or no gate exists
           for this task or this checkpoint (`reason` says which): never REAL (UNVERIFIED)

Apart from the gates, two refusals hold for any load whatever its gate (`degenerate_weights`):
refuse_degenerate_weights(model), constant or all-zero weight matrices; and
refuse_identical_outputs(...), called by measure.benchmark, every output the same for
different inputs.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import torch

from fleet.errors import CheckFailure, ErrorKind

# -- language models ------------------------------------------------------------------------
# Plain, everyday English: any pretrained LM predicts it far better than a uniform guess.
LM_TEXT = (
    "The sun rose slowly over the quiet village, and the farmers walked out to their fields. "
    "Children ran along the road to school, while their parents opened the small shops in the "
    "market square. By noon the air was warm, and most people stopped to eat lunch in the shade "
    "of the old trees."
)
# Causal LM: mean per-token loss <= LM_FRACTION * ln V. Measured (ratio = loss / ln V,
# bench/results/quality_calibration.json): real SmolLM2-135M-Instruct (GGUF Q4_1, V=49152)
# 0.32 (3.44 nats); its second half of layers re-initialised 2.07; layers deranged 1.56; only
# the embeddings real 1.05; random init 1.02; zero 1.00. Tiny Llama (V=128): random 1.00, zero 1.00.
LM_FRACTION = 0.5

# Seq2seq: T5's own pretraining task, span corruption (sentinels mark the dropped spans).
SPAN_SOURCE = (
    "The sun rose slowly over the <extra_id_0> village, and the farmers walked out to their "
    "<extra_id_1>. Children ran along the road to <extra_id_2>, while their parents opened the "
    "small shops in the market square."
)
SPAN_TARGET = "<extra_id_0> quiet <extra_id_1> fields <extra_id_2> school <extra_id_3>"
# Seq2seq: mean per-token loss on SPAN_TARGET <= SEQ2SEQ_FRACTION * ln V.
# Measured here: random init 1.09, zero 1.00 (tiny T5, V=128, copy task: its tokenizer has no
# sentinels). Real T5 weights are not on this machine: NOT MEASURED. Expected from T5's
# published pretraining loss (about 1.5-2 nats on span corruption, V=32128, ln V=10.4): a
# ratio of about 0.15-0.2, not measured.
SEQ2SEQ_FRACTION = 0.5

# Masked LM: every MLM_EVERY-th word-piece of LM_TEXT (specials aside) replaced by the mask
# token, mean loss on those <= MLM_FRACTION * ln V. Measured here (python -m
# bench.quality_calibration, "architecture_job_gates"; tiny BertForMaskedLM with MiniLM's real
# tokenizer, V=30522): random init 1.00 (0.998), zero 1.00.
# Real masked-LM weights are not on this machine: NOT MEASURED (the packaged MiniLM ships no
# masked-LM head: loaded as BertForMaskedLM it is weights_incomplete). Expected from BERT's
# published MLM perplexity (about 4-6 at 15 % masking, 1.4-1.8 nats, V=30522, ln V=10.3): a
# ratio of about 0.15-0.25 at 20 %, not measured.
MLM_EVERY = 5
MLM_FRACTION = 0.5

# -- sentence embeddings --------------------------------------------------------------------
# (anchor, paraphrase, unrelated): paraphrases share few words with the anchor, the unrelated
# sentence shares many, so a bag of (real) word vectors without the trained encoder fails.
EMBEDDING_TRIPLES = (
    ("A man is eating food.", "Someone is having a meal.", "A man is eating his words in the debate."),
    (
        "The stock market fell sharply today.",
        "Share prices dropped a lot this afternoon.",
        "The market sells fresh fruit today.",
    ),
    ("It is raining heavily outside.", "There is a downpour out there.", "It is heavily outside the budget."),
)
# Embeddings: mean margin cos(anchor, paraphrase) - cos(anchor, unrelated) >= EMBEDDING_MARGIN.
# Three triples keep the gate under a fifth of the check's time. Measured on MiniLM-L6
# (all-MiniLM-L6-v2): real 0.32; layers deranged -0.00; layers 4-6 re-initialised 0.04;
# random init -0.03; only the word embeddings real -0.05; zero 0.00.
EMBEDDING_MARGIN = 0.12
# A general text encoder (an architecture job's base model, e.g. an ad hoc BertModel) is held
# to the same margin, but as proof only: a pretrained encoder never tuned for sentence
# similarity (mean-pooled bert-base) may miss it, so a miss is "no gate" (passed None), not a
# failure (not_proven()). Measured (bench.quality_calibration, "architecture_job_gates"):
# MiniLM loaded as BertModel 0.32 (the figure above); tiny random BertModel with MiniLM's
# tokenizer -0.04, zero 0.00. Causal LM loss through the same path: tiny random GPT-2 with
# MiniLM's tokenizer (V=30522) 1.00, zero 1.00 (against LM_FRACTION below).

# -- video-text (X-CLIP) --------------------------------------------------------------------
# The text tower's margin on prompt triples, as for sentence embeddings.
PROMPT_TRIPLES = (
    ("a person playing guitar", "someone strumming an acoustic guitar", "a person playing football"),
    ("a dog running on the beach", "a puppy sprinting along the sand", "a hot dog stand on the beach"),
    ("someone cooking in a kitchen", "a chef preparing a meal at the stove", "someone sleeping in a kitchen"),
)
# X-CLIP text margin >= TEXT_MARGIN. Measured here: random init -0.33, zero 0.00 (tiny X-CLIP).
# Real X-CLIP weights are not on this machine: NOT MEASURED (CLIP-family text towers usually
# separate paraphrases from unrelated prompts by 0.1-0.2 in cosine similarity).
TEXT_MARGIN = 0.05

# -- CTC speech -----------------------------------------------------------------------------
SPEECH_TEXT = "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG"
# workers/checks/data/speech_16k.wav: 2.9 s, 16 kHz mono 16-bit, made once by
# `python scripts/make_speech_sample.py` (espeak-ng -v en-us -s 160, resampled 22050 -> 16000).
SPEECH_FILE = "speech_16k.wav"
# CTC: character error rate <= CER_BOUND. Measured here: random init 6.84 (tiny wav2vec2: a
# long garbage transcript), zero 1.00 (empty transcript); through an architecture job's gate
# (the recording normalised without a feature extractor) random 9.98, zero 1.00. Real wav2vec2 weights are not on this
# machine: NOT MEASURED (wav2vec2-base-960h has 3.4 % WER on LibriSpeech test-clean; espeak
# speech is out of its domain, so a CER of roughly 0.05-0.3 is expected, not measured).
CER_BOUND = 0.5


def gate(
    metric: str, value: float, bound: float, reference: str, higher_is_better: bool, **details: Any
) -> dict[str, Any]:
    """The quality record of one check. `passed` is decided here; measure.benchmark marks it
    information only for synthetic weights, and enforce() fails the job when it is False."""
    ok = value >= bound if higher_is_better else value <= bound
    if not math.isfinite(value):
        ok = False
    return {
        "metric": metric,
        "value": round(value, 4) if math.isfinite(value) else str(value),
        "bound": round(bound, 4),
        "direction": ">=" if higher_is_better else "<=",
        "reference": reference,
        "passed": ok,
        **details,
    }


def no_gate(reason: str, **details: Any) -> dict[str, Any]:
    """The record of a check that has no gate for what it loaded: no bound was checked, so
    `passed` is None and `reason` says why (such a result is never REAL)."""
    return {
        "metric": None,
        "value": None,
        "bound": None,
        "direction": None,
        "reference": None,
        "passed": None,
        "reason": reason,
        **details,
    }


def not_proven(q: dict[str, Any], why: str) -> dict[str, Any]:
    """A gate that can prove pretraining but whose miss proves nothing (a sufficient test):
    a held bound stays passed True, a missed one becomes passed None with `why` as its reason
    (the figure and the bound stay in the record)."""
    if q["passed"] is not False:
        return q
    return {**q, "passed": None, "reason": why}


def enforce(q: dict[str, Any]) -> None:
    """The quality gate: a record whose bound did not hold fails the job (quality_gate). A
    synthetic model's record (passed None) is information only."""
    if q["passed"] is False:
        raise failure(q)


def failure(q: dict[str, Any]) -> CheckFailure:
    if q.get("direction") is None:  # no bound of its own: failed by what measure found (the tokenizer)
        message = f"quality gate: {q.get('metric') or 'no metric'} ({q.get('reason') or 'no bound'})"
    else:
        message = (
            f"quality gate: {q['metric']} = {q['value']}, required {q['direction']} {q['bound']} ({q['reference']})"
        )
    if q.get("tokenizer_unfaithful"):
        bad = q["tokenizer_unfaithful"]
        message += (
            f"; the tokenizer does not reproduce the gate text "
            f"({bad['text'][:60]!r} decodes to {bad['decoded'][:60]!r})"
        )
    return CheckFailure(ErrorKind.QUALITY_GATE, message, dict(q))


def _letters(text: str, specials: list[str]) -> str:
    for token in sorted(specials, key=len, reverse=True):
        text = text.replace(token, " ")
    return "".join(ch for ch in text.lower() if ch.isalnum())


def tokenizer_problem(tokenizer: Any, texts: list[str]) -> dict[str, Any] | None:
    """The tokenizer decides what every text gate measures: it must reproduce the gate's texts
    (letters and digits, case and spacing aside) when they are encoded and decoded again. A
    tokenizer that drops or merges words to make the text easy (random weights passing a
    margin gate, a loss over a handful of tokens) is a failed gate. None when it is faithful."""
    if tokenizer is None or not texts:
        return None
    specials = [str(t) for t in (getattr(tokenizer, "all_special_tokens", None) or [])]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=False)
        if _letters(text, specials) != _letters(back, specials):
            return {"text": text[:200], "decoded": back[:200], "tokens": len(ids)}
    return None


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _known_targets(ids: torch.Tensor, tokenizer: Any) -> torch.Tensor:
    """True where a target token carries text: unknown-token positions are not scored, so a
    tokenizer that maps the text to <unk> cannot pass by predicting <unk>."""
    unk = getattr(tokenizer, "unk_token_id", None)
    return ids != unk if unk is not None else torch.ones_like(ids, dtype=torch.bool)


def causal_lm_loss(model: Any, tokenizer: Any, text: str = LM_TEXT) -> tuple[float, int]:
    """Mean next-token loss (nats) over the known tokens of `text`, and how many were scored."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"].to(model_device(model))
    logits = model(input_ids=ids).logits[0, :-1].float()
    targets = ids[0, 1:]
    keep = _known_targets(targets, tokenizer)
    if not bool(keep.any()):
        return math.inf, 0
    loss = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    return float(loss), int(keep.sum())


def seq2seq_pair(tokenizer: Any) -> tuple[str, str, str]:
    """(task, source, target) that suits the checkpoint's pretraining: span corruption where
    the vocabulary has T5's sentinels, mask infilling where it has a mask token, else a copy."""
    vocab = tokenizer.get_vocab()
    if "<extra_id_0>" in vocab:
        return "span_corruption", SPAN_SOURCE, SPAN_TARGET
    mask = getattr(tokenizer, "mask_token", None)
    if mask:
        return "mask_infilling", LM_TEXT.replace("quiet", mask, 1), LM_TEXT
    return "copy", LM_TEXT, LM_TEXT


def seq2seq_loss(model: Any, tokenizer: Any, source: str, target: str) -> tuple[float, int]:
    dev = model_device(model)
    enc = tokenizer(source, return_tensors="pt")
    labels = tokenizer(text_target=target, return_tensors="pt")["input_ids"].to(dev)
    keep = _known_targets(labels, tokenizer)
    if not bool(keep.any()):
        return math.inf, 0
    logits = model(
        input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev), labels=labels
    ).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    return float(loss), int(keep.sum())


def masked_lm_loss(model: Any, tokenizer: Any, text: str = LM_TEXT, every: int = MLM_EVERY) -> tuple[float, int]:
    """Mean loss (nats) predicting every `every`-th word-piece of `text` (special tokens aside)
    with that piece replaced by the mask token, and how many were scored."""
    enc = tokenizer(text, return_tensors="pt")
    ids = enc["input_ids"]
    specials = tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)
    ordinary = [i for i, s in enumerate(specials) if not s]
    positions = torch.tensor(ordinary[every // 2 :: every], dtype=torch.long)
    if positions.numel() == 0 or tokenizer.mask_token_id is None:
        return math.inf, 0
    targets = ids[0, positions]
    keep = _known_targets(targets, tokenizer)
    if not bool(keep.any()):
        return math.inf, 0
    masked = ids.clone()
    masked[0, positions] = int(tokenizer.mask_token_id)
    dev = model_device(model)
    inputs = {k: v.to(dev) for k, v in enc.items() if k in ("attention_mask", "token_type_ids")}
    logits = model(input_ids=masked.to(dev), **inputs).logits[0, positions.to(dev)].float()
    loss = torch.nn.functional.cross_entropy(logits[keep], targets[keep].to(dev))
    return float(loss), int(keep.sum())


def lm_gate(loss: float, tokens: int, vocab_size: int, fraction: float, **details: Any) -> dict[str, Any]:
    ln_v = math.log(vocab_size)
    return gate(
        "mean_token_loss",
        loss,
        fraction * ln_v,
        f"{fraction} x ln V (uniform guess over V={vocab_size}: {ln_v:.3f} nats)",
        higher_is_better=False,
        ratio_to_uniform=round(loss / ln_v, 4) if math.isfinite(loss) else None,
        tokens=tokens,
        **details,
    )


def triple_margins(vectors: torch.Tensor) -> list[float]:
    """Rows are (anchor, paraphrase, unrelated) repeated: cosine margin of each triple."""
    v = torch.nn.functional.normalize(vectors.float(), p=2, dim=-1).view(-1, 3, vectors.shape[-1])
    close = (v[:, 0] * v[:, 1]).sum(-1)
    far = (v[:, 0] * v[:, 2]).sum(-1)
    return [round(float(m), 4) for m in close - far]


def margin_gate(margins: list[float], bound: float, what: str) -> dict[str, Any]:
    mean = sum(margins) / len(margins)
    return gate(
        "semantic_margin",
        mean,
        bound,
        f"mean over {len(margins)} {what} of cos(anchor, paraphrase) - cos(anchor, unrelated)",
        higher_is_better=True,
        margins=margins,
        ordered=sum(m > 0 for m in margins),
    )


def flatten(triples: tuple[tuple[str, str, str], ...]) -> list[str]:
    return [s for t in triples for s in t]


def speech_sample() -> torch.Tensor:
    """The committed 16 kHz mono recording of SPEECH_TEXT, as floats in [-1, 1]."""
    import wave

    with resources.files("workers.checks").joinpath("data").joinpath(SPEECH_FILE).open("rb") as fh, wave.open(fh) as w:
        if w.getframerate() != 16_000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise CheckFailure(ErrorKind.INTERNAL, f"{SPEECH_FILE} is not 16 kHz mono 16-bit")
        raw = w.readframes(w.getnframes())
    return torch.frombuffer(bytearray(raw), dtype=torch.int16).float() / 32768.0


def normalise_transcript(text: str) -> str:
    kept = "".join(c for c in text.upper() if c.isalpha() or c in " '")
    return " ".join(kept.split())


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate: Levenshtein distance / reference length, after normalising."""
    hyp, ref = normalise_transcript(hypothesis), normalise_transcript(reference)
    prev = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, 1):
        cur = [i]
        for j, hc in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rc != hc)))
        prev = cur
    return prev[-1] / max(len(ref), 1)


def ctc_gate(transcript: str) -> dict[str, Any]:
    """The CTC gate: the greedy transcript of SPEECH_FILE against SPEECH_TEXT."""
    return gate(
        "character_error_rate",
        cer(transcript, SPEECH_TEXT),
        CER_BOUND,
        f"greedy CTC transcript of {SPEECH_FILE} against {SPEECH_TEXT!r}",
        higher_is_better=False,
        transcript=transcript[:200],
    )


# -- degenerate weights and outputs: refused for any load, whatever its gate ----------------
# A weight matrix (a floating parameter of 2 or more dimensions) is constant when its minimum
# equals its maximum (all zero included). Vectors are left out: LayerNorm weights are all ones
# and biases may be all zero in real weights (MiniLM's pooler bias is). Real weights have no
# constant matrix (MiniLM 0 of 40, SmolLM2-135M 0 of 211), but freshly initialised ones can
# (zero-initialised relative-position tables, gates, query tokens: in 9 of 66 tiny random
# architectures sampled, at most 16 % of the matrices and 10 % of their elements), so the
# refusal needs a majority, by count or by elements (workers/tiny build, sampled with
# random.seed(1) over workers.architectures.enumerate_classes()).
DEGENERATE_SHARE = 0.5
# Outputs for different inputs are "the same" within this relative tolerance (of their scale).
IDENTICAL_RTOL = 1e-6


def degenerate_weights(model: torch.nn.Module) -> dict[str, Any] | None:
    """What makes the model's weights degenerate (a majority of its weight matrices constant,
    by count or by elements), or None."""
    matrices = constant = elements = constant_elements = 0
    examples: list[str] = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.is_floating_point() or p.dim() < 2 or p.numel() < 2 or p.device.type == "meta":
                continue
            matrices += 1
            elements += p.numel()
            low, high = torch.aminmax(p.detach())
            if bool(low == high):
                constant += 1
                constant_elements += p.numel()
                if len(examples) < 5:
                    examples.append(f"{name} = {float(low):g}")
    if not matrices:
        return None
    if constant / matrices <= DEGENERATE_SHARE and constant_elements / elements <= DEGENERATE_SHARE:
        return None
    return {
        "constant_matrices": constant,
        "matrices": matrices,
        "constant_share_of_elements": round(constant_elements / elements, 4),
        "examples": examples,
    }


def refuse_degenerate_weights(model: torch.nn.Module) -> None:
    """Raise CheckFailure(degenerate_weights) when a majority of the weight matrices are constant."""
    found = degenerate_weights(model)
    if found is not None:
        raise CheckFailure(
            ErrorKind.DEGENERATE_WEIGHTS,
            f"{found['constant_matrices']} of {found['matrices']} weight matrices are constant "
            f"({found['constant_share_of_elements']:.0%} of their elements), e.g. {', '.join(found['examples'][:3])}",
            found,
        )


def identical_outputs(outputs: list[tuple[str, torch.Tensor]]) -> dict[str, Any] | None:
    """`outputs`: (name, tensor) pairs whose first dimension runs over different inputs. What
    shows the outputs are the same for every input (every tensor's rows equal), or None. An
    empty list proves nothing (None)."""
    compared: list[str] = []
    for name, t in outputs:
        if t.dim() == 0 or t.shape[0] < 2 or t.numel() == 0 or not t.is_floating_point():
            continue
        rows = t.detach().float().reshape(t.shape[0], -1)
        scale = max(float(rows.abs().nan_to_num(posinf=0.0).max()), 1.0)
        if not bool(((rows - rows[0]).abs() <= IDENTICAL_RTOL * scale).all()):  # NaN: not shown identical
            return None
        compared.append(f"{name} {list(t.shape)}")
    return {"identical": compared} if compared else None


def refuse_identical_outputs(outputs: list[tuple[str, torch.Tensor]]) -> None:
    """Raise CheckFailure(degenerate_weights) when every output is the same for different inputs."""
    found = identical_outputs(outputs)
    if found is not None:
        raise CheckFailure(
            ErrorKind.DEGENERATE_WEIGHTS,
            f"the outputs are identical for different inputs ({'; '.join(found['identical'])})",
            found,
        )
