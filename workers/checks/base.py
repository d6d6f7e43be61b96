"""What every check shares: the loaded model bundle and the Check interface."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fleet.errors import CheckFailure, ErrorKind


@dataclass
class Bundle:
    """A loaded model with its pre-processing, and the names it goes by. What its load proves
    (files, digests, claims, timings) travels beside it as workers.evidence.LoadEvidence."""

    model: Any
    tokenizer: Any = None
    processor: Any = None  # feature extractor / image processor, when the check needs one
    name: str = ""
    source: str = ""  # hub | cache | local | synthetic
    revision: str | None = None
    architecture: str = ""
    path: Path | None = None
    task: str = ""  # the transformers task an auto-built model was built for (workers/tiny)
    built_from: str = ""  # a synthetic model: the config it was built from

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def without_model(self) -> Bundle:
        """The same names without the model and its pre-processing, so they can be freed."""
        return replace(self, model=None, tokenizer=None, processor=None)


class Check:
    """One family's inference check.

    prepare() builds inputs on the device, infer() runs one inference (under no_grad),
    validate() raises CheckFailure(output_invalid) with the values that failed and returns
    a small, JSON-able fingerprint of the output; quality() measures one figure that only
    pretrained weights reach (see workers/quality.py) and returns quality.gate(...)'s dict;
    units() says what throughput counts.
    """

    name = ""
    auto_class = "AutoModel"
    unit = "samples"
    # The output fields that make its known-answer fingerprint: field -> absolute tolerance
    # (None: must be equal exactly). See fleet/pins.py and orchestrator/pins.py.
    fingerprint_fields: dict[str, float | None] = {}

    def load_preprocessing(self, path: Path) -> tuple[Any, Any]:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path), None

    def gate_texts(self, bundle: Bundle) -> list[str]:
        """The texts the quality gate feeds through the tokenizer (checked for a faithful
        tokenizer before the gate runs, for real weights)."""
        return []

    def prepare(self, bundle: Bundle, device: torch.device) -> dict[str, Any]:
        raise NotImplementedError

    def infer(self, bundle: Bundle, inputs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def validate(self, bundle: Bundle, inputs: dict[str, Any], first: Any, repeat: Any) -> dict[str, Any]:
        raise NotImplementedError

    def quality(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any]:
        """{"metric", "value", "bound", "reference", "passed", ...}; runs under inference_mode."""
        raise NotImplementedError

    def distinct_outputs(self, bundle: Bundle, inputs: dict[str, Any], first: Any) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) pairs of the first inference's outputs whose first dimension runs over
        different inputs: measure refuses weights (degenerate_weights) whose outputs are all the
        same for them. [] where the check feeds one input only (nothing to compare)."""
        return []

    def units(self, inputs: dict[str, Any], output: Any) -> float:
        return 1.0

    # -- what capability variants need (workers/variants.py) --------------------------------
    def forward_inputs(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The keyword arguments of one plain forward pass whose first floating-point output
        (float_tensors) every variant is compared on; None where the check has none."""
        return inputs

    def generate_kwargs(self, bundle: Bundle, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The keyword arguments of one greedy model.generate() call, or None where the check
        does not generate (static_cache is then not applicable)."""
        return None

    def fingerprint(self, output: dict[str, Any]) -> dict[str, Any]:
        """What a known-answer pin records of a validated output."""
        return {k: output[k] for k in self.fingerprint_fields if k in output}

    def tolerance(self) -> dict[str, float]:
        return {k: v for k, v in self.fingerprint_fields.items() if v is not None}


def float_tensors(output: Any) -> list[tuple[str, torch.Tensor]]:
    """The floating-point tensors of a model output, named, in order (a list of tensors, such as
    hidden states per layer or feature maps, counts by its first). An output holding none at its
    top level gives its towers' own outputs (InstructBLIP's), and one holding only discrete codes
    (an audio tokenizer's encoder) gives the codes."""
    if isinstance(output, torch.Tensor):
        return [("output", output)]
    items = (
        output.items() if hasattr(output, "items") else enumerate(output if isinstance(output, (tuple, list)) else [])
    )
    found: list[tuple[str, torch.Tensor]] = []
    nested: list[tuple[str, torch.Tensor]] = []
    codes: list[tuple[str, torch.Tensor]] = []
    for key, value in items:
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            key, value = f"{key}[0]", value[0]  # feature maps of a backbone, hidden states per layer
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            found.append((str(key), value))
        elif isinstance(value, torch.Tensor) and value.dim() > 0 and not value.is_complex():
            codes.append((str(key), value))
        elif hasattr(value, "items"):
            nested.extend((f"{key}.{name}", t) for name, t in float_tensors(value))
    return found or nested or codes


def invalid(message: str, **values: Any) -> CheckFailure:
    return CheckFailure(ErrorKind.OUTPUT_INVALID, message, {k: _jsonable(v) for k, v in values.items()})


def require_finite(name: str, t: torch.Tensor) -> None:
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise invalid(f"{name} has {bad} non-finite value(s) of {t.numel()}", shape=list(t.shape), non_finite=bad)


def require_shape(name: str, t: torch.Tensor, expected: tuple[int | None, ...]) -> None:
    shape = tuple(t.shape)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected, strict=True)):
        raise invalid(f"{name} has shape {list(shape)}, expected {list(expected)}", shape=list(shape))


def sample(t: torch.Tensor, n: int = 8) -> list[float]:
    """The first n values, rounded: enough to compare devices, small enough to store."""
    return [round(float(x), 5) for x in t.detach().flatten()[:n].float().cpu()]


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return sample(v, 16)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
