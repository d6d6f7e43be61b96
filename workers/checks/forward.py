"""The generic checks of architecture jobs (arch:<Class>): a forward pass with validated
outputs (batch dimension, finiteness, determinism), and for generating tasks a few greedy
tokens as well. Inputs come from workers/tiny/inputs.py; a model the harness cannot feed is
harness_unsupported, never the model's failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fleet.errors import CheckFailure
from workers.checks import task_gates
from workers.checks.base import Bundle, Check, float_tensors, invalid, require_finite, sample
from workers.tiny import SEED, Unsupported
from workers.tiny.inputs import BATCH, fresh, generate_inputs, leading_sizes, make_inputs, streamed_audio
from workers.tiny.tasks import task_of_class

NEW_TOKENS = 3


class ForwardCheck(Check):
    name = "forward"
    auto_class = "AutoModel"
    task = ""  # set by for_architecture() for an ad hoc job (a synthetic bundle carries its own)
    fingerprint_fields = {"output_name": None, "shape": None, "sample": 1e-3}

    def load_preprocessing(self, path: Path) -> tuple[Any, Any]:
        # inputs are made from the model's config (workers.tiny.inputs); the tokenizer, when the
        # repository ships one, is for the quality gate (workers/checks/task_gates.py)
        return task_gates.load_tokenizer(path), None

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        try:
            return make_inputs(bundle.model, device, bundle.task or self.task)
        except CheckFailure:
            raise
        except Exception as exc:
            raise Unsupported(f"inputs for {bundle.architecture}: {type(exc).__name__}: {exc}") from None

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        # seeded like the inputs: a model that samples in forward (VITS: its durations' noise) gives
        # the same output for the same inputs, as with a seed set by its user
        torch.manual_seed(SEED)
        try:
            return bundle.model(**fresh(inputs))  # each pass from the same state (an inference session)
        except TypeError as exc:  # the harness did not give forward() the arguments it takes
            if "argument" not in str(exc):
                raise
            raise Unsupported(f"inputs for {bundle.architecture}: TypeError: {exc}") from None

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        a, b = float_tensors(first), float_tensors(repeat)
        if not a:
            raise invalid(f"{bundle.architecture} returned no floating-point tensor", output_type=type(first).__name__)
        name, t = a[0]
        require_finite(name, t)
        leading = leading_sizes(bundle.model.config, inputs)
        if t.dim() == 0 or (t.shape[0] not in leading and not _packed(name, t)):
            raise invalid(
                f"{name} has shape {list(t.shape)}, expected {' or '.join(map(str, sorted(leading)))} first",
                shape=list(t.shape),
            )
        if len(b) != len(a) or not torch.allclose(t.float(), b[0][1].float(), atol=1e-4, rtol=1e-4, equal_nan=False):
            diff = float((t.float() - b[0][1].float()).abs().max()) if len(b) == len(a) else None
            raise invalid(f"{name} differs between two identical forward passes", max_abs_diff=diff)
        return {"output_name": name, "shape": list(t.shape), "sample": sample(t), "outputs": len(a)}

    def gate_texts(self, bundle: Bundle) -> list[str]:
        return task_gates.texts(bundle, task_gates.task_of(bundle, bundle.task or self.task))

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        """The gate of the loaded class's task, or a record saying there is none (passed None)."""
        return task_gates.measure(bundle, task_gates.task_of(bundle, bundle.task or self.task))

    def distinct_outputs(self, bundle: Bundle, inputs: dict[str, Any], first: Any) -> list[tuple[str, torch.Tensor]]:
        # the BATCH rows of every input differ (workers.tiny.inputs draws each row on its own)
        return [(name, t) for name, t in float_tensors(first) if t.dim() > 0 and t.shape[0] == BATCH]

    def units(self, inputs: dict[str, Any], output: Any) -> float:
        return float(BATCH)


def _packed(name: str, t: torch.Tensor) -> bool:
    """Hidden states of every batch item packed into one sequence, split evenly over the batch:
    (1, tokens, width) (Pixtral's vision tower: all images' patches) or (tokens, width)
    (Qwen3-ASR's encoder: all clips' frames)."""
    if name != "last_hidden_state":
        return False
    tokens = int(t.shape[1]) if t.dim() == 3 and t.shape[0] == 1 else int(t.shape[0]) if t.dim() == 2 else 0
    return tokens >= BATCH and tokens % BATCH == 0


class GenerateCheck(ForwardCheck):
    name = "generate"
    auto_class = "AutoModel"
    fingerprint_fields = {"output_name": None, "shape": None, "sample": 1e-3, "generated": None}

    def generate_kwargs(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any] | None:
        model = bundle.model
        if not model.can_generate():
            return None
        kwargs: dict[str, Any] = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
        kwargs["num_return_sequences"] = 1  # said, not left to a model's own generate (MusicGen reads it unset: None)
        kwargs["pad_token_id"] = model.generation_config.pad_token_id or 0
        kwargs["eos_token_id"] = None
        if model.generation_config.decoder_start_token_id is None:
            # a decoder-only model may read it too (MusicGen pads its codebooks' delay pattern with it)
            kwargs["decoder_start_token_id"] = model.generation_config.pad_token_id or 0
        gen_inputs = {k: v for k, v in inputs.items() if not k.startswith("decoder_") and k != "use_cache"}
        gen_inputs.update(streamed_audio(model, gen_inputs, NEW_TOKENS))  # audio to stream the new tokens from
        device = next(v.device for v in inputs.values() if isinstance(v, torch.Tensor))
        return {**(generate_inputs(model, device) or gen_inputs), **kwargs}

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        out = super().validate(bundle, inputs, first, repeat)
        model = bundle.model
        kwargs = self.generate_kwargs(bundle, inputs)
        if kwargs is None:
            out["generated"] = None
            return out
        seq = model.generate(**kwargs)
        seq2 = model.generate(**kwargs)
        seq = getattr(seq, "sequences", seq)
        seq2 = getattr(seq2, "sequences", seq2)
        if seq.shape[0] != BATCH or seq.shape[-1] < NEW_TOKENS:
            raise invalid(f"generate returned shape {list(seq.shape)}", shape=list(seq.shape))
        if not torch.equal(seq, seq2):
            raise invalid("greedy generation differs between two identical calls")
        out["generated"] = seq[:, -NEW_TOKENS:].tolist()
        return out


def for_architecture(architecture: str) -> ForwardCheck:
    """The check of an ad hoc job (check "auto"): chosen by the task of the config's architecture
    (workers.architectures), loading exactly that class."""
    import transformers

    from fleet.errors import ErrorKind

    task = task_of_class(architecture)
    if task is None or not hasattr(transformers, architecture):
        raise CheckFailure(
            ErrorKind.UNSUPPORTED_ARCHITECTURE,
            f"{architecture} is in no task mapping of the installed transformers {transformers.__version__}",
        )
    from workers.architectures import GENERATING

    check = GenerateCheck() if task in GENERATING else ForwardCheck()
    check.auto_class = architecture
    check.task = task
    return check
