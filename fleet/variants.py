"""Capability variants: what `--variants` asks a job to run beside its reference (float32 with the
model's default attention), on the same loaded weights. No torch here: the orchestrator parses
and checks the value, the job carries the canonical names, the worker parses them again
(workers/variants.py runs them).

A variant is a precision x an attention implementation x a feature, each part optional:

    bf16, fp16                          precision (bfloat16, float16), default attention
    sdpa, eager, flex, flash            attention in float32 (flash: flash_attention_2)
    attention:NAME                      any attention function registered with transformers'
                                        AttentionInterface (plugins may register one); no Hub
                                        kernel: no '/' or '|', and of the FlashAttention names
                                        only FLASH_ATTENTIONS
    sdpa:flash, sdpa:efficient,         SDPA with one backend forced (torch.nn.attention.sdpa_kernel),
    sdpa:cudnn, sdpa:math               CUDA only
    batched                             a padded batch against each row run on its own
    static_cache                        greedy generation with a static KV cache against a dynamic one
    compile, export                     torch.compile(fullgraph=True), torch.export (opt-in: only
                                        when named, or with `all`)

Parts combine with `+` (`bf16+sdpa`). `default` is the family's own list (catalog `variants`),
else DEFAULT; `all` is every variant above but attention:NAME; `none` runs none.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.errors import BadInput

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
ATTENTIONS = {"sdpa": "sdpa", "eager": "eager", "flex": "flex_attention", "flash": "flash_attention_2"}
# The FlashAttention implementations a variant may name: packages installed on the worker. Any
# other name with "flash" in it (and "/", "paged|...") makes transformers fetch a kernel from the
# Hub (kernels.get_kernel): code from the Hub runs only when opted in, and variants never opt in.
FLASH_ATTENTIONS = ("flash_attention_2", "flash_attention_3")
SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "math": "MATH",
}
FEATURES = ("batched", "static_cache", "compile", "export")
OPT_IN = ("compile", "export")  # costly: run only when named, or with `all`

# Tolerances against the float32 reference, like transformers' common tests
# (tests/test_modeling_common.py: eager vs SDPA fp32 rtol 1e-4, fp16 5e-3, bf16 1e-2): (atol, rtol).
TOLERANCE = {"float32": (1e-4, 1e-4), "float16": (5e-3, 2e-2), "bfloat16": (1e-2, 5e-2)}

DEFAULT = ("bf16", "fp16", "sdpa", "eager", "batched", "static_cache")
ALL = (
    "bf16",
    "fp16",
    "sdpa",
    "eager",
    "flex",
    "flash",
    "sdpa:flash",
    "sdpa:efficient",
    "sdpa:cudnn",
    "sdpa:math",
    "batched",
    "static_cache",
    "compile",
    "export",
)
MAX_VARIANTS = 64
MAX_NAME = 80

# A variant's verdict, and the kinds of an `error` verdict (data: stable strings; docs/variants.md).
VERDICTS = ("works", "mismatch", "error", "not_applicable")
UNSUPPORTED_PRECISION = "unsupported_precision"
ATTENTION_UNSUPPORTED = "attention_unsupported"
COMPILE_ERROR = "compile_error"
EXPORT_ERROR = "export_error"
OOM = "oom"
INFERENCE_ERROR = "inference_error"
TIMEOUT = "timeout"
CRASHED = "crashed"  # the process died while the variant ran (a native crash in a kernel)
ERROR_KINDS = (
    UNSUPPORTED_PRECISION,
    ATTENTION_UNSUPPORTED,
    COMPILE_ERROR,
    EXPORT_ERROR,
    OOM,
    INFERENCE_ERROR,
    TIMEOUT,
    CRASHED,
)


class VariantError(BadInput):
    """A --variants value (or a job's or catalog's variants list) that cannot be used."""


@dataclass(frozen=True)
class Variant:
    precision: str = "float32"  # torch dtype name
    attention: str | None = None  # None: the model's default; else an attention implementation name
    sdpa_backend: str | None = None  # a torch SDPBackend member name, forced (CUDA only)
    feature: str | None = None  # one of FEATURES

    @property
    def name(self) -> str:
        """The stable name: the tokens of the parts, joined by +."""
        parts = []
        if self.precision != "float32":
            parts.append(next(k for k, v in PRECISIONS.items() if v == self.precision))
        if self.sdpa_backend is not None:
            parts.append("sdpa:" + next(k for k, v in SDPA_BACKENDS.items() if v == self.sdpa_backend))
        elif self.attention is not None:
            short = next((k for k, v in ATTENTIONS.items() if v == self.attention), None)
            parts.append(short or f"attention:{self.attention}")
        if self.feature is not None:
            parts.append(self.feature)
        return "+".join(parts) or "fp32"

    @property
    def tolerance(self) -> tuple[float, float]:
        return TOLERANCE[self.precision]

    @property
    def claim(self) -> str | None:
        """The class attribute of transformers that claims this variant works, if any."""
        if self.feature == "compile":
            return "_can_compile_fullgraph"
        return {"sdpa": "_supports_sdpa", "flex_attention": "_supports_flex_attn"}.get(
            self.attention or "", "_supports_flash_attn" if (self.attention or "").startswith("flash_") else None
        )


def _token(token: str, where: str) -> Variant:
    fields: dict[str, str] = {}
    for part in token.split("+"):
        if part in PRECISIONS:
            key, value = "precision", PRECISIONS[part]
        elif part in ATTENTIONS:
            key, value = "attention", ATTENTIONS[part]
        elif part.startswith("sdpa:"):
            backend = part.removeprefix("sdpa:")
            if backend not in SDPA_BACKENDS:
                raise VariantError(
                    f"{where}: unknown SDPA backend {part!r} in {token!r} (valid: "
                    + ", ".join(f"sdpa:{b}" for b in SDPA_BACKENDS)
                    + ")"
                )
            fields["attention"] = "sdpa"
            key, value = "sdpa_backend", SDPA_BACKENDS[backend]
        elif part.startswith("attention:"):
            name = part.removeprefix("attention:")
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise VariantError(
                    f"{where}: bad attention name in {token!r} (letters, digits, _ -; no '/' or '|': "
                    "transformers reads those as kernels to fetch from the Hub)"
                )
            if "flash" in name.lower() and name not in FLASH_ATTENTIONS:
                raise VariantError(
                    f"{where}: unknown FlashAttention {name!r} in {token!r} (valid: "
                    + ", ".join(FLASH_ATTENTIONS)
                    + "; transformers would fetch any other from the Hub)"
                )
            key, value = "attention", name
        elif part in FEATURES:
            key, value = "feature", part
        else:
            raise VariantError(
                f"{where}: unknown variant {part!r}"
                + (f" in {token!r}" if part != token else "")
                + " (valid: default, all, none, "
                + ", ".join([*PRECISIONS, *ATTENTIONS, *(f"sdpa:{b}" for b in SDPA_BACKENDS), *FEATURES])
                + ", attention:NAME; combine with +)"
            )
        if key in fields and not (key == "attention" and fields[key] == value):
            raise VariantError(f"{where}: {token!r} names two {key.replace('_', ' ')}s")
        fields[key] = value
    return Variant(**fields)


def parse(
    text: str | list[str] | tuple[str, ...], family_default: tuple[str, ...] = (), where: str = "--variants"
) -> list[Variant]:
    """The variants a value names, in order, without repeats. Raises VariantError naming the bad token."""
    tokens = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    if isinstance(text, str) and not text.strip():
        raise VariantError(f"{where}: empty (give default, all, none or a list such as bf16,fp16,sdpa)")
    out: dict[str, Variant] = {}
    for token in tokens:
        if not token:
            raise VariantError(f"{where}: an empty entry in {text!r}")
        if len(token) > MAX_NAME:
            raise VariantError(f"{where}: {token[:40]!r}... is longer than {MAX_NAME} characters")
        if token == "none":
            continue
        expanded = ALL if token == "all" else (family_default or DEFAULT) if token == "default" else (token,)
        for t in expanded:
            v = _token(t, where)
            if v.name == "fp32":
                raise VariantError(f"{where}: {token!r} is the reference itself (float32, default attention)")
            out.setdefault(v.name, v)
    if len(out) > MAX_VARIANTS:
        raise VariantError(f"{where}: {len(out)} variants, at most {MAX_VARIANTS}")
    return list(out.values())


def names(variants: list[Variant]) -> list[str]:
    return [v.name for v in variants]


def check_list(value: object, where: str) -> list[str]:
    """A list of variant names as a job or catalog holds it: checked, canonical names returned."""
    if not isinstance(value, list) or len(value) > MAX_VARIANTS or not all(isinstance(v, str) for v in value):
        raise VariantError(f"{where} must be a list of at most {MAX_VARIANTS} variant names")
    return names(parse(value, where=where)) if value else []
