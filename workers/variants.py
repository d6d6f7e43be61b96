"""Capability variants (fleet/variants.py) on the weights a job already loaded: after the reference
(the check's forward pass in the model's own precision with its default attention), each variant
re-casts the model in place (model.to(dtype)), re-dispatches its attention
(model.set_attn_implementation, read back from config._attn_implementation), or runs a feature
(a padded batch, a static cache, torch.compile, torch.export), and is compared with the reference.

Nothing is downloaded or loaded again. After every variant the model is put back exactly as it
was: the tensors the reference ran on are kept (model.to() gives the module new tensors and
leaves the old ones alone) and put back in place, so the float32 weights come back bit for bit,
and the attention implementation is set back to the default.

A variant never changes the job's status: its verdict is data (schema in docs/variants.md).
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from fleet.errors import CheckFailure
from fleet.variants import (
    ATTENTION_UNSUPPORTED,
    COMPILE_ERROR,
    CRASHED,
    EXPORT_ERROR,
    INFERENCE_ERROR,
    OOM,
    TIMEOUT,
    UNSUPPORTED_PRECISION,
    Variant,
    parse,
)
from fleet.variants import FLASH_ATTENTIONS as KNOWN_FLASH
from workers import failures, measure
from workers.checks.base import Bundle, Check, float_tensors
from workers.tiny.inputs import fresh

# Timed calls per variant. A call that compiles nothing (a precision, an attention kernel in eager
# mode, batched, static cache) counts its first call as a sample: p50 of the first and WARM_REPEATS
# more. A call that compiles (flex_attention, compile, export) leaves its first call out (it is
# first_call_s / compile_s / export_s): p50 of REPEATS more.
WARM_REPEATS = 1
REPEATS = 2
FLEX = "flex_attention"
# Compiled flex code kept per code object in one process before the cache is reset (dynamo's own
# default limit is 8; past it, dynamo would silently run flex unfused: see _compiled_flex).
FLEX_RECOMPILE_LIMIT = 64
CLAIMS = ("_supports_sdpa", "_supports_flash_attn", "_supports_flex_attn", "_can_compile_fullgraph")
NOT_THE_MODELS = (OOM, TIMEOUT)  # errors that say nothing about a claim
# The job's pins judge for a variant's fingerprint (fleet/pins.judge with the job's pins and
# weights bound): (fingerprint, tolerance, variant=NAME) -> the known-answer record, or raises
# CheckFailure (known_answer_mismatch, identity_mismatch).
KnownAnswer = Callable[..., dict[str, Any]]


class Failed(Exception):
    """A variant ended in an error of a kind (the verdict), raised where the kind is known."""

    def __init__(self, kind: str, exc: BaseException) -> None:
        super().__init__(failures.describe(exc, 400))
        self.kind = OOM if failures.is_oom(exc) else kind
        self.timed_out = timed_out(exc)


def timed_out(exc: BaseException) -> bool:
    """The job's time limit, raised inside library code that wrapped it (inductor wraps what its
    compile raises): JobTimeout or Celery's SoftTimeLimitExceeded anywhere in the chain."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return False
        if type(seen).__name__ in ("JobTimeout", "SoftTimeLimitExceeded") or "JobTimeout" in str(seen)[:2000]:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class NotApplicable(Exception):
    """The variant cannot apply to this model on this device (the reason is the message)."""


@dataclass(frozen=True)
class Snapshot:
    """The tensors a model holds (parameters and buffers), to put back after a re-cast, and the
    attention implementation of every config it holds (its own, its sub-models', their
    sub-configs'), to put back as each was: set_attn_implementation(default) would ask every
    sub-model for the top-level default, which a sub-model that never ran it refuses (a ResNet
    backbone inside an SDPA detector)."""

    tensors: tuple[tuple[torch.nn.Module, str, bool, torch.Tensor], ...]
    attention: str | None
    configs: tuple[tuple[Any, Any], ...] = ()

    @classmethod
    def of(cls, model: torch.nn.Module) -> Snapshot:
        held = []
        for module in model.modules():
            for name, p in module._parameters.items():
                if p is not None:
                    held.append((module, name, True, p.data))
            for name, b in module._buffers.items():
                if b is not None:
                    held.append((module, name, False, b))
        configs = tuple((c, c.__dict__[ATTN]) for c in _configs_of(model) if ATTN in c.__dict__)
        return cls(tuple(held), attention_of(model), configs)

    def restore(self, model: torch.nn.Module) -> None:
        for module, name, is_param, tensor in self.tensors:
            if is_param:
                module._parameters[name].data = tensor  # type: ignore[union-attr]
            else:
                module._buffers[name] = tensor
        if self.configs:
            for config, value in self.configs:
                config.__dict__[ATTN] = value
        elif self.attention is not None and attention_of(model) != self.attention:
            model.set_attn_implementation(self.attention)  # type: ignore[operator]


# The reason of an attention setting a model ignores (its output bit-identical to the reference's).
IGNORED = "the model does not dispatch attention through transformers' attention interface"
# Where transformers keeps a config's attention implementation (what set_attn_implementation writes).
ATTN = "_attn_implementation_internal"


def _configs_of(model: Any) -> list[Any]:
    """Every config the model holds: its own, each sub-model's, and their sub-configs at any depth."""
    return _config_tree([getattr(m, "config", None) for m in model.modules()])


def _config_tree(roots: list[Any]) -> list[Any]:
    """The configs given and their sub-configs at any depth, each once, breadth first."""
    out: list[Any] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        config = todo.pop(0)
        if config is None or id(config) in seen or not hasattr(config, "__dict__"):
            continue
        seen.add(id(config))
        out.append(config)
        todo.extend(getattr(config, key, None) for key in getattr(config, "sub_configs", None) or ())
    return out


def attention_of(model: Any) -> str | None:
    config = getattr(model, "config", None)
    value = getattr(config, "_attn_implementation", None)
    return str(value) if value is not None else None


def attentions_of(model: Any) -> list[str]:
    """The attention implementations the model's config and its sub-configs (at any depth) read
    back, without repeats, the top-level one first."""
    out: list[str] = []
    for config in _config_tree([getattr(model, "config", None)]):
        value = getattr(config, "_attn_implementation", None)
        if value is not None and str(value) not in out:
            out.append(str(value))
    return out


def precisions_of(model: torch.nn.Module) -> list[str]:
    """The dtypes of the model's floating-point parameters, without repeats."""
    out: list[str] = []
    for p in model.parameters():
        name = str(p.dtype).removeprefix("torch.")
        if p.is_floating_point() and name not in out:
            out.append(name)
    return out


def _ignored(read_back: dict[str, list[str]], v: Variant, kept: frozenset[str] = frozenset()) -> str | None:
    """'asked X, model runs Y' when the model reads back another attention or precision than the
    variant asked for (transformers only logs a warning for a class that cannot switch attention;
    a model's own .to() may leave its weights alone). `kept`: what sub-models that do not claim the
    attention kept (set_attention); the model itself must run the attention asked."""
    runs = read_back["attention"]
    if v.attention is not None and (not runs or runs[0] != v.attention or not set(runs) <= {v.attention} | kept):
        return f"asked attention {v.attention}, model runs {', '.join(read_back['attention']) or 'none named'}"
    if read_back["precision"] and read_back["precision"] != [v.precision]:
        return f"asked {v.precision}, model runs {', '.join(read_back['precision'])}"
    return None


def set_attention(model: Any, name: str, claim: str | None) -> tuple[dict[str, str], str]:
    """Ask the model for attention `name`, as a user would (set_attn_implementation). transformers
    asks every sub-model for it, and a sub-model that does not claim it refuses (a ResNet backbone
    inside an SDPA detector), though the model already runs it where it claims it. Then it is asked
    for the model and every sub-model that claims it, and the sub-models that do not claim it keep
    what they ran (their sub-config mapped to their own value, transformers' dict form). Returns
    ({sub-model class: attention kept}, transformers' refusal); a refusal by the model itself, or by
    a sub-model that claims the attention, is raised."""
    try:
        model.set_attn_implementation(name)
        return {}, ""
    except Exception as exc:
        refusal = failures.describe(exc, 300)
        if claim is None or not getattr(type(model), claim, False):
            raise
        refusing = [
            m
            for m in model.modules()
            if m is not model
            and hasattr(m, "set_attn_implementation")
            and not getattr(type(m), claim, False)
            and getattr(m, "config", None) is not None
            and m.config is not getattr(model, "config", None)
        ]
        if not refusing:
            raise
        keep = {id(m.config): str(attention_of(m)) for m in refusing}
        mapping = _attention_map(model.config, name, keep)
        if not isinstance(mapping, dict):
            raise
        model.set_attn_implementation(mapping)
        return {type(m).__name__: keep[id(m.config)] for m in refusing}, refusal


def _attention_map(config: Any, name: str, keep: dict[int, str]) -> str | dict[str, Any]:
    """transformers' dict form of set_attn_implementation: `name` for this config and every
    sub-config, but the configs in `keep` (their own value)."""
    out: dict[str, Any] = {}
    for key in getattr(config, "sub_configs", None) or ():
        sub = getattr(config, key, None)
        if sub is None:
            continue
        if id(sub) in keep:
            out[key] = keep[id(sub)]
        else:
            below = _attention_map(sub, name, keep)
            if isinstance(below, dict):
                out[key] = below
    return {"": name, **out} if out else name


def claims_of(model: Any) -> dict[str, bool]:
    """The class's own claims, as the installed transformers declares them."""
    cls = type(model)
    return {attr: bool(getattr(cls, attr, False)) for attr in CLAIMS}


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    return value


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class NoFloatOutput(RuntimeError):
    """The forward pass returned nothing a variant could be compared on."""


def _no_reference(exc: BaseException) -> str:
    if isinstance(exc, NoFloatOutput):
        return str(exc).removeprefix("the forward pass ")
    return f"failed: {failures.describe(exc, 300)}"


def _first(output: Any) -> tuple[str, torch.Tensor]:
    found = [(name, t) for name, t in float_tensors(output) if t.is_floating_point()]
    if not found:
        raise NoFloatOutput(f"the forward pass returned no floating-point tensor ({type(output).__name__})")
    return found[0]


def reference_problem(reference: torch.Tensor) -> str | None:
    """Why a reference output cannot judge a variant, or None. A verdict compares a variant's
    output with the reference's, so the reference must be able to tell kernels apart: one with
    no values makes every variant `works` vacuously, one with NaN or infinite values makes every
    variant `mismatch` (and blames the class's claim), and one whose values are all equal (a
    zeroed head, an output that does not depend on the computation) matches any kernel and
    any precision that keeps that constant. A single value (one score, one regression output) is
    not constant in that sense: a kernel that computes otherwise changes it."""
    ref = reference.detach()
    if ref.numel() == 0:
        return "has no values"
    bad = int((~torch.isfinite(ref)).sum())
    if bad:
        return f"holds {bad} non-finite value(s) of {ref.numel()}"
    flat = ref.reshape(-1)
    if flat.numel() > 1 and bool((flat == flat[0]).all()):  # one value (a score) still tells kernels apart
        return (
            f"is constant (all {ref.numel()} values are {float(flat[0]):g}): it cannot tell kernels or precisions apart"
        )
    return None


def _timed(fn: Callable[[], Any], dev: torch.device, compiles: bool = False) -> tuple[Any, float, float]:
    """The first call's output and seconds (compilation included), and the p50 latency (ms): of
    REPEATS more calls when the first compiles, else of the first and WARM_REPEATS more."""
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    first = time.perf_counter() - t0
    times = [] if compiles else [first]
    for _ in range(REPEATS if compiles else WARM_REPEATS):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return out, first, measure.percentile(times, 0.5) * 1000


def compare(
    reference: torch.Tensor, output: torch.Tensor, atol: float, rtol: float, keep: torch.Tensor | None = None
) -> dict[str, Any]:
    """works or mismatch, with the figures: max abs and rel difference (rel against |reference|),
    the tolerance used (elementwise |a - b| <= atol + rtol * |reference|, as torch.allclose),
    and how many values are NaN or infinite. keep: the (batch, position) attention mask of the
    inputs: where the output runs over the same positions, padding positions (whose values no
    kernel defines) are left out, as transformers' tests leave them out."""
    ref = reference.detach().float().cpu()
    out = output.detach().float().cpu()
    figures: dict[str, Any] = {"atol": atol, "rtol": rtol}
    if ref.shape != out.shape:
        return {"verdict": "mismatch", "reason": f"shape {list(out.shape)}, reference {list(ref.shape)}", **figures}
    if keep is not None and keep.dim() == 2 and ref.dim() >= 2 and tuple(ref.shape[:2]) == tuple(keep.shape):
        mask = keep.detach().cpu().bool()
        if not bool(mask.all()):
            ref, out = ref[mask], out[mask]
            figures["padding_left_out"] = int((~mask).sum())
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        return {
            "verdict": "mismatch",
            "reason": f"{bad} non-finite value(s) of {out.numel()}",
            "non_finite": bad,
            **figures,
        }
    diff = (out - ref).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    max_rel = float((diff / ref.abs().clamp_min(1e-12)).max()) if diff.numel() else 0.0
    ok = bool((diff <= atol + rtol * ref.abs()).all())
    figures.update(max_abs_diff=max_abs, max_rel_diff=min(max_rel, 1e30), non_finite=0)
    return {"verdict": "works" if ok else "mismatch", **figures}


@contextmanager
def _sdpa_backend(name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(getattr(SDPBackend, name)):
        yield


@dataclass
class Context:
    check: Check
    bundle: Bundle
    dev: torch.device
    inputs: dict[str, Any]  # the check's inputs (prepare)
    forward: dict[str, Any]  # the plain forward pass compared (check.forward_inputs)
    reference: torch.Tensor
    reference_ms: float
    default_attention: str | None
    real: bool  # pretrained weights: reduced precisions also run the quality gate
    dtype: torch.dtype = torch.float32
    compiles: bool = False  # the variant's first call compiles (flex_attention): left out of its p50
    known_answer: KnownAnswer | None = None  # pretrained weights: pins scoped to a variant are judged
    eager: list[torch.Tensor] = field(default_factory=list)  # the float32 eager output, once run

    def eager_reference(self) -> torch.Tensor:
        """The float32 output with eager attention: what an attention implementation is judged
        against when the reference itself ran that implementation (transformers' tests compare
        SDPA, flex and FlashAttention with eager). Run once, on first need."""
        if not self.eager:
            model = self.bundle.model
            before = Snapshot.of(model)  # every config's attention, put back as it was
            try:
                model.set_attn_implementation("eager")
                runs = attentions_of(model)
                if runs != ["eager"]:  # judged against itself, any kernel would work
                    raise NotApplicable(f"no eager run to judge it against: asked eager, model runs {', '.join(runs)}")
                with torch.inference_mode():
                    self.eager.append(_first(model(**fresh(self.forward)))[1].detach().clone())
            finally:
                before.restore(model)
        return self.eager[0]

    @property
    def keep(self) -> torch.Tensor | None:
        """The inputs' attention mask (which positions are not padding), if they have one."""
        mask = self.forward.get("attention_mask")
        return mask if isinstance(mask, torch.Tensor) else None

    def call(self, model: Any, kwargs: dict[str, Any]) -> torch.Tensor:
        return _first(model(**_cast(fresh(kwargs), self.dtype)))[1]  # a session: each pass from its state


def run(
    check: Check,
    bundle: Bundle,
    dev: torch.device,
    wanted: list[str],
    real: bool,
    known_answer: KnownAnswer | None = None,
    journal: Path | None = None,
) -> dict[str, Any]:
    """Every variant named (fleet/variants.py names) on the bundle's loaded model: the record
    result["variants"] holds (docs/variants.md). known_answer: each precision/attention variant's
    check output is fingerprinted and judged by it (its pins scoped to the variant). journal: the
    job's crash journal (Journal), so that a variant that kills the process (a native crash in a
    compiled kernel) is an `error` / `crashed` on the next delivery, not the job's death."""
    model = bundle.model
    variants = parse(wanted, where="variants")
    claims = claims_of(model)
    snapshot = Snapshot.of(model)
    with torch.inference_mode():
        inputs = check.prepare(bundle, dev)
        forward = check.forward_inputs(bundle, inputs)
        record: dict[str, Any] = {
            "reference": {
                "precision": str(next(model.parameters()).dtype).removeprefix("torch."),
                "attention": snapshot.attention,
            },
            "claims": claims,
            "results": [],
        }
        if forward is None:
            record["results"] = [_na(v, "the check has no plain forward pass to compare") for v in variants]
            record["findings"] = []
            return record
        try:
            out, _first_s, ref_ms = _timed(lambda: _first(model(**fresh(forward))), dev)
        except measure.JobTimeout:
            raise
        except Exception as exc:  # the job passed its check: no reference is a fact about variants only
            why = f"no reference to compare with: the check's plain forward pass {_no_reference(exc)}"
            record["results"] = [_na(v, why) for v in variants]
            record["findings"] = []
            return record
        name, reference = out
        record["reference"].update(output=name, shape=list(reference.shape), latency_ms_p50=round(ref_ms, 3))
        unusable = reference_problem(reference)
        if unusable is not None:  # every verdict would judge the reference, not the variant
            record["reference"]["unusable"] = unusable
            why = f"no reference to compare with: the check's plain forward pass's {name} {unusable}"
            record["results"] = [_na(v, why) for v in variants]
            record["findings"] = []
            return record
    ctx = Context(
        check,
        bundle,
        dev,
        inputs,
        forward,
        reference.detach().clone(),
        ref_ms,
        snapshot.attention,
        real,
        known_answer=known_answer,
    )
    results: list[dict[str, Any]] = record["results"]
    book = Journal(journal)
    crashed = book.crashed()
    try:
        for i, v in enumerate(variants):
            if v.name in crashed:
                results.append(_error(v, CRASHED, crashed[v.name]))
                continue
            book.starting(v.name)
            try:
                results.append(_one(ctx, v, snapshot))
            except measure.JobTimeout as exc:  # the job's time is up: the rest are not run
                results.extend(_error(w, TIMEOUT, f"the job's time limit passed: {exc}") for w in variants[i:])
                break
    finally:
        book.close()
        snapshot.restore(model)
    record["findings"] = findings(results, claims)
    return record


class Journal:
    """Which variant a job was running, on local disk: a variant whose kernel kills the process
    (SIGSEGV in a compiled flex kernel: DogeModel on cpu) would otherwise kill every delivery of
    the job, and the job, whose check had passed, would end FAILED worker_lost. The name is
    written before each variant runs; a delivery that finds one left by a delivery that died
    records that variant as `error` / `crashed` and does not run it again; the file is removed
    when the variants end. A file per job (the path names it); a redelivery to another host
    cannot see it and runs the variant again (the job's max_attempts still bounds it)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.state: dict[str, Any] = {"crashed": {}, "running": None}
        if path is not None:
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict) and isinstance(loaded.get("crashed"), dict):
                    self.state = {"crashed": dict(loaded["crashed"]), "running": loaded.get("running")}
            except (OSError, ValueError):
                pass

    def crashed(self) -> dict[str, str]:
        running = self.state.get("running")
        if isinstance(running, str) and running not in self.state["crashed"]:
            self.state["crashed"][running] = (
                "the process running this variant died (a native crash, or killed) on an earlier "
                "delivery of the job; not run again"
            )
            self.state["running"] = None
        return {str(k): str(v) for k, v in self.state["crashed"].items()}

    def starting(self, name: str) -> None:
        self.state["running"] = name
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text(json.dumps(self.state))
            except OSError:
                pass  # no journal: a crash costs the delivery, as without one

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _entry(v: Variant) -> dict[str, Any]:
    return {"variant": v.name, "precision": v.precision, "attention": v.attention, "feature": v.feature}


def _na(v: Variant, reason: str) -> dict[str, Any]:
    return {**_entry(v), "verdict": "not_applicable", "reason": reason}


def _error(v: Variant, kind: str, message: str) -> dict[str, Any]:
    return {**_entry(v), "verdict": "error", "kind": kind, "message": message[:500]}


def _applicable(ctx: Context, v: Variant) -> str | None:
    """Why the variant cannot apply here, or None."""
    cuda = ctx.dev.type == "cuda"
    if v.sdpa_backend is not None and not cuda:
        return "SDPA backends are forced on CUDA only"
    if v.attention is not None and v.attention.startswith("flash_"):
        if not cuda:
            return f"{v.attention} runs on CUDA only"
        import importlib.util

        package = "flash_attn_interface" if v.attention == "flash_attention_3" else "flash_attn"
        if importlib.util.find_spec(package) is None:
            return f"package {package} is not installed"
    if v.attention is not None:
        hub = _hub_kernel(ctx.bundle.model, v.attention)
        if hub is not None:
            return f"would fetch a kernel from the Hub: {hub}"
    if v.feature == "compile" or v.attention == FLEX:
        off = dynamo_off()
        if off is not None:
            return off
    if v.feature == "static_cache" and ctx.check.generate_kwargs(ctx.bundle, ctx.inputs) is None:
        return "the model does not generate (static cache applies to generation)"
    if v.feature == "batched" and "input_ids" not in ctx.forward:
        return "the inputs have no token ids to pad"
    return None


def dynamo_off() -> str | None:
    """Why torch.compile would not compile in this process, or None. With dynamo disabled
    (TORCHDYNAMO_DISABLE / TORCH_COMPILE_DISABLE, torch._dynamo.config.disable) torch.compile
    returns the model itself and flex_attention runs its unfused eager path; with errors
    suppressed a failed compile runs eager: a verdict then judges eager code under the name
    of a compiled kernel."""
    config = torch._dynamo.config
    if getattr(config, "disable", False) or os.environ.get("TORCHDYNAMO_DISABLE", "") == "1":
        return "torch.compile is disabled in this process (TORCHDYNAMO_DISABLE or TORCH_COMPILE_DISABLE)"
    if getattr(config, "suppress_errors", False):
        return (
            "torch._dynamo.config.suppress_errors is on: a failed compile would run eager (TORCHDYNAMO_SUPPRESS_ERRORS)"
        )
    return None


def _hub_kernel(model: Any, name: str) -> str | None:
    """Why asking transformers for attention `name` could make it load a kernel from the Hub
    (kernels.get_kernel), or None. Variants never run code from the Hub: the name is checked as
    transformers' _check_and_adjust_attn_implementation reads it -- a kernel repo (is_kernel),
    a `paged|` prefix stripped, a flash name swapped for one the class (or a sub-model) lists in
    _compatible_flash_implementations, a FlashAttention whose package is not usable replaced by
    its FLASH_ATTN_KERNEL_FALLBACK when the kernels package is installed."""
    from transformers.integrations.hub_kernels import is_kernel
    from transformers.utils import is_kernels_available

    if "|" in name or "/" in name or ":" in name or is_kernel(name):
        return f"{name} names a Hub kernel or a prefixed implementation"
    if "flash" not in name.lower():
        return None
    if name not in KNOWN_FLASH:
        return f"{name} is not one of {', '.join(KNOWN_FLASH)}"
    for module in model.modules():
        listed = getattr(module, "_compatible_flash_implementations", None)
        if listed and name not in listed:
            return f"{type(module).__name__} lists {', '.join(map(str, listed))}, which transformers would switch to"
    if is_kernels_available() and not _flash_usable(name):
        return f"{name} is not usable here and transformers falls back to a kernels-community kernel"
    return None


def _flash_usable(name: str) -> bool:
    """transformers' own availability check of a FlashAttention (no check known: not usable)."""
    try:
        from transformers.modeling_flash_attention_utils import FLASH_ATTENTION_COMPATIBILITY_MATRIX
    except ImportError:
        return False
    entry = FLASH_ATTENTION_COMPATIBILITY_MATRIX.get(int(name.rsplit("_", 1)[-1]))
    return bool(entry and entry["general_availability_check"]())


def _one(ctx: Context, v: Variant, snapshot: Snapshot) -> dict[str, Any]:
    reason = _applicable(ctx, v)
    if reason is not None:
        return _na(v, reason)
    started = time.perf_counter()
    entry = _one_timed(ctx, v, snapshot)
    entry["wall_s"] = round(time.perf_counter() - started, 3)
    return entry


def _one_timed(ctx: Context, v: Variant, snapshot: Snapshot) -> dict[str, Any]:
    model = ctx.bundle.model
    entry = _entry(v)
    dtype = getattr(torch, v.precision)
    peak = _peak_start(ctx.dev)
    try:
        try:
            if dtype != torch.float32:
                model.to(dtype)
        except Exception as exc:
            raise Failed(UNSUPPORTED_PRECISION, exc) from None
        kept: dict[str, str] = {}
        refusal = ""
        try:
            if v.attention is not None:
                kept, refusal = set_attention(model, v.attention, v.claim)
        except Exception as exc:
            raise Failed(ATTENTION_UNSUPPORTED, exc) from None
        entry["kernel"] = str(attention_of(model)) + (f" ({v.sdpa_backend})" if v.sdpa_backend else "")
        entry["read_back"] = {"attention": attentions_of(model), "precision": precisions_of(model)}
        if kept:
            entry["kept"] = kept
        ignored = _ignored(entry["read_back"], v, frozenset(kept.values()))
        if ignored is not None:  # set without an error, yet not applied: nothing to judge
            raise NotApplicable(ignored)
        flex = v.attention == FLEX
        run_ctx = replace(ctx, dtype=dtype, compiles=flex)
        for last_try in (not flex, True):  # flex: once more on a fresh cache when its cache is full
            try:
                with _sdpa_backend(v.sdpa_backend), _compiled_flex(entry, last_try) if flex else nullcontext():
                    entry.update(_feature(run_ctx, v))
                    if entry["verdict"] != "error" and ctx.real and dtype != torch.float32 and v.feature is None:
                        entry["quality"] = _gate(run_ctx)
                    if entry["verdict"] != "error" and ctx.known_answer is not None and v.feature is None:
                        _known_answer(run_ctx, v, entry)
                break
            except _FlexCacheFull:
                torch._dynamo.reset()
                entry.pop("quality", None)
    except Failed as exc:
        if exc.timed_out:
            raise measure.JobTimeout(str(exc)) from None
        return {**entry, **_error(v, exc.kind, str(exc))}
    except NotApplicable as exc:
        if kept and str(exc).startswith(IGNORED):  # the parts that kept their own hold all its attention
            parts = ", ".join(f"{k} keeps {a}" for k, a in kept.items())
            hollow = f"only sub-models that do not claim {v.attention} run attention ({parts}): {refusal}"
            return {**entry, **_error(v, ATTENTION_UNSUPPORTED, hollow)}
        return {**entry, **_na(v, str(exc))}
    except measure.JobTimeout:
        raise
    except Exception as exc:
        if timed_out(exc):
            raise measure.JobTimeout(failures.describe(exc, 300)) from None
        kind = UNSUPPORTED_PRECISION if _precision_unsupported(exc) else INFERENCE_ERROR
        return {**entry, **_error(v, OOM if failures.is_oom(exc) else kind, failures.describe(exc, 500))}
    finally:
        snapshot.restore(model)
    peak_mb = _peak_mb(ctx.dev, peak)
    if peak_mb is not None:
        entry["peak_memory_mb"] = peak_mb
    return entry


class _FlexCacheFull(Exception):
    """flex_attention's compiled code cache reached FLEX_RECOMPILE_LIMIT entries in this process."""


@contextmanager
def _compiled_flex(entry: dict[str, Any], last_try: bool) -> Iterator[None]:
    """flex_attention run compiled as transformers runs it, and proof that it ran.

    transformers compiles flex_attention once per process (torch.compile) and builds its block
    mask with a compiled create_block_mask; dynamo keeps the compiled code per set of guards
    (shapes, the mask function's code, the attention scale...). A worker runs class after class:
    a class whose guards hold reuses code compiled for an earlier class with the same shapes and
    functions (dynamo's contract: what a fresh process would compile for those inputs), and one
    whose guards fail compiles its own. Two things would make the verdict one on a kernel that did
    not run, and both are refused:

    - automatic dynamic shapes (a size seen to change is recompiled dynamic: a kernel that depends
      on the classes run before): off, so every kernel is compiled for its own static shapes;
    - the recompile limit (past it dynamo silently runs flex's unfused eager implementation):
      fail_on_recompile_limit_hit, with the limit raised to FLEX_RECOMPILE_LIMIT entries; when the
      cache is full, the caller resets dynamo and runs the variant again on a fresh cache
      (last_try=False raises _FlexCacheFull), and a variant that fills even a fresh cache is a
      compile_error.

    The block mask (which blocks of scores the mask function leaves anything in: metadata the kernel
    skips by) is built without compiling create_block_mask. Tracing that vmap was most of a class's
    flex cost on cpu (about 2 s of 3 for a tiny Llama, warm inductor cache); the mask function is
    compiled into the flex kernel anyway, which applies it to every score it computes, and the
    block mask eager and compiled is the same.

    entry["compiled"] records what compiled (dynamo graphs, inductor FX graph cache hits and
    misses), how many calls went through transformers' compiled flex path and how many block masks
    were built eagerly; a variant whose model never called flex is not_applicable."""
    from torch._dynamo.utils import counters

    calls = _count_flex_calls()
    masks = _eager_block_masks()
    before = _compile_counts(counters)
    try:
        with torch._dynamo.config.patch(
            fail_on_recompile_limit_hit=True,
            automatic_dynamic_shapes=False,
            recompile_limit=FLEX_RECOMPILE_LIMIT,
        ):
            yield
    except Exception as exc:
        if _recompile_limit(exc):
            if not last_try:
                raise _FlexCacheFull() from None
            raise Failed(
                COMPILE_ERROR,
                RuntimeError(
                    f"{FLEX} recompiled past its recompile limit ({FLEX_RECOMPILE_LIMIT} entries) within "
                    "the variant on a fresh cache; its unfused eager fallback was refused"
                ),
            ) from None
        raise
    finally:
        n_calls = calls.stop()
        n_masks = sum(m.stop() for m in masks)
        after = _compile_counts(counters)
        graphs, hits, misses = (a - b for a, b in zip(after, before, strict=True))
        entry["compiled"] = {
            "by": "torch.compile (inductor)" if graphs else "compiled code reused" if n_calls else "nothing compiled",
            "graphs": graphs,
            "fx_graph_cache_hits": hits,
            "fx_graph_cache_misses": misses,
            "flex_calls": n_calls,
            "block_masks_eager": n_masks,
        }
    if not n_calls:
        raise NotApplicable(f"{FLEX} was set, yet the model never called it")


class _Calls:
    """Counts calls of a function a module looks up by name at each call (transformers' compiled
    flex path, compile_friendly_flex_attention; its create_block_mask), with keyword arguments
    forced if given, while installed; stop() puts the function back."""

    def __init__(self, module: Any, name: str, force: dict[str, Any] | None = None) -> None:
        self.module, self.name, self.count = module, name, 0
        self.original = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return self.original(*args, **{**kwargs, **(force or {})})

        setattr(module, name, counted)

    def stop(self) -> int:
        setattr(self.module, self.name, self.original)
        return self.count


def _count_flex_calls() -> _Calls:
    from transformers.integrations import flex_attention

    return _Calls(flex_attention, "compile_friendly_flex_attention")


def _eager_block_masks() -> list[_Calls]:
    """create_block_mask as transformers' mask builders call it (masking_utils, and the older
    integrations.flex_attention helper), with _compile=False."""
    import transformers.integrations.flex_attention as integration
    import transformers.masking_utils as masking

    return [
        _Calls(module, "create_block_mask", {"_compile": False})
        for module in (masking, integration)
        if hasattr(module, "create_block_mask")
    ]


def _compile_counts(counters: Any) -> tuple[int, int, int]:
    return (
        int(counters["stats"].get("unique_graphs", 0)),
        int(counters["inductor"].get("fxgraph_cache_hit", 0)),
        int(counters["inductor"].get("fxgraph_cache_miss", 0)),
    )


def _recompile_limit(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            return False
        if type(seen).__name__ == "FailOnRecompileLimitHit":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _precision_unsupported(exc: BaseException) -> bool:
    text = str(exc)
    return "not implemented for" in text and ("'Half'" in text or "'BFloat16'" in text)


def _feature(ctx: Context, v: Variant) -> dict[str, Any]:
    """Run the variant's feature (or the plain forward pass) and judge it."""
    atol, rtol = v.tolerance
    model = ctx.bundle.model
    if v.feature == "batched":
        return _batched(ctx, atol, rtol)
    if v.feature == "static_cache":
        return _static_cache(ctx)
    if v.feature == "compile":
        from torch._dynamo.utils import counters

        try:
            torch._dynamo.reset()
            before = _compile_counts(counters)[0]
            compiled = torch.compile(model, fullgraph=True)
            with torch.no_grad():
                out, first_s, ms = _timed(lambda: ctx.call(compiled, ctx.forward), ctx.dev, compiles=True)
            graphs = _compile_counts(counters)[0] - before
        except measure.JobTimeout:
            raise
        except Exception as exc:
            raise Failed(COMPILE_ERROR, exc) from None
        finally:
            torch._dynamo.reset()
        if graphs <= 0:  # on a fresh cache a compiled call traces at least one graph
            raise NotApplicable("torch.compile traced no graph: the calls ran the model uncompiled")
        judged = compare(ctx.reference, out, atol, rtol, ctx.keep)
        return {**judged, **_speed(ctx, ms), "compile_s": round(first_s, 3), "graphs": graphs}
    if v.feature == "export":
        try:
            with torch.no_grad():
                t0 = time.perf_counter()
                program = torch.export.export(model, (), kwargs=_cast(ctx.forward, ctx.dtype), strict=False)
                export_s = time.perf_counter() - t0
                exported = program.module()
                out, _, ms = _timed(lambda: ctx.call(exported, ctx.forward), ctx.dev, compiles=True)
        except measure.JobTimeout:
            raise
        except Exception as exc:
            raise Failed(EXPORT_ERROR, exc) from None
        return {**compare(ctx.reference, out, atol, rtol, ctx.keep), **_speed(ctx, ms), "export_s": round(export_s, 3)}
    against, reference = "reference", ctx.reference
    if v.attention is not None and v.attention == ctx.default_attention and v.precision == "float32":
        against, reference = "eager", ctx.eager_reference()  # the same kernel as the reference: judge it by eager
    with torch.inference_mode():
        out, first_s, ms = _timed(lambda: ctx.call(model, ctx.forward), ctx.dev, ctx.compiles)
    if (
        v.attention is not None
        and v.attention != ctx.default_attention
        and v.precision == "float32"
        and torch.equal(out.detach().float().cpu(), ctx.reference.float().cpu())
    ):  # another kernel gives other rounding: a bit-identical output means the setting was ignored
        raise NotApplicable(
            f"{IGNORED}: its output with {v.attention} is bit-identical to the {ctx.default_attention} reference"
        )
    judged = compare(reference, out, atol, rtol, ctx.keep)
    return {**judged, **_speed(ctx, ms), "first_call_s": round(first_s, 3), "against": against}


def _known_answer(ctx: Context, v: Variant, entry: dict[str, Any]) -> None:
    """The check's own output in this variant (infer, repeat, validate, fingerprint) against the
    job's pins scoped to the variant: entry["known_answer"], and the verdict `mismatch` where a
    pin differs. The tolerance per field is the check's, at least the variant's atol; fields the
    check compares exactly (tokens) stay exact."""
    check, bundle = ctx.check, ctx.bundle
    assert ctx.known_answer is not None
    tolerance = {k: max(t, v.tolerance[0]) for k, t in check.tolerance().items()}
    inputs = _cast(ctx.inputs, ctx.dtype)
    try:
        with torch.inference_mode():
            first = check.infer(bundle, inputs)
            output = check.validate(bundle, inputs, first, check.infer(bundle, inputs))
    except CheckFailure as exc:  # no valid output to fingerprint: nothing to pin or judge
        entry["known_answer"] = {"pinned": None, "matched": None, "unavailable": f"{exc.kind}: {exc.reported}"[:300]}
        return
    try:
        record = ctx.known_answer(check.fingerprint(output), tolerance, variant=v.name)
    except CheckFailure as exc:
        record = {"pinned": True, "matched": False, "kind": str(exc.kind), "message": exc.reported[:500], **exc.data}
        why = f"known answer: {exc.reported}"[:500]
        entry.update(verdict="mismatch", reason=f"{entry['reason']}; {why}" if entry.get("reason") else why)
    entry["known_answer"] = {**record, "check": check.name}


def _speed(ctx: Context, ms: float, reference_ms: float | None = None) -> dict[str, Any]:
    ref = ctx.reference_ms if reference_ms is None else reference_ms
    return {"latency_ms_p50": round(ms, 3), "speed_vs_reference": round(ref / ms, 3) if ms > 0 else None}


def _gate(ctx: Context) -> dict[str, Any]:
    """The check's quality gate in this precision (pretrained weights only)."""
    with torch.inference_mode():
        q = ctx.check.quality(ctx.bundle, _cast(ctx.inputs, ctx.dtype))
    return {k: q.get(k) for k in ("metric", "value", "bound", "passed")}


# -- batched: a padded batch against each row on its own --------------------------------------
def _padding_side(bundle: Bundle) -> str:
    side = getattr(bundle.tokenizer, "padding_side", None)
    return side if side in ("left", "right") else "right"


def _pad_id(bundle: Bundle) -> int:
    for source in (getattr(bundle.model, "config", None), bundle.tokenizer):
        value = getattr(source, "pad_token_id", None)
        if isinstance(value, int):
            return value
    return 0


def _batched(ctx: Context, atol: float, rtol: float) -> dict[str, Any]:
    """Two rows, one shortened and padded (on the tokenizer's side), against each run alone;
    compared on the positions that are not padding."""
    fwd = ctx.forward
    ids = fwd["input_ids"]
    rows = ids.shape[0]
    single = {
        key: (v[:1] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == rows else v)
        for key, v in fwd.items()
    }
    mask = single.get("attention_mask")
    row = single["input_ids"][0]
    if mask is not None:
        row = row[mask[0].bool()]
    n = int(row.shape[0])
    if n < 3:
        raise NotApplicable(f"the input has {n} token(s), too few to pad")
    token_keys = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
    others = {key: v for key, v in single.items() if key not in token_keys}
    for key, v in others.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] != 1:
            raise NotApplicable(f"input {key} has no row per sequence")
    cut = max(1, n // 3)
    side = _padding_side(ctx.bundle)
    short = row[: n - cut]
    pad = torch.full((cut,), _pad_id(ctx.bundle), dtype=row.dtype, device=row.device)
    padded = torch.cat([pad, short]) if side == "left" else torch.cat([short, pad])
    real = torch.ones(n - cut, dtype=torch.long, device=row.device)
    gap = torch.zeros(cut, dtype=torch.long, device=row.device)
    batch_mask = torch.stack(
        [
            torch.ones(n, dtype=torch.long, device=row.device),
            torch.cat([gap, real]) if side == "left" else torch.cat([real, gap]),
        ]
    )
    takes = set(inspect.signature(ctx.bundle.model.forward).parameters)

    def kwargs(input_ids: torch.Tensor, attention: torch.Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
        if "token_type_ids" in single:
            out["token_type_ids"] = torch.zeros_like(input_ids)
        if (
            side == "left"
            and "position_ids" in takes
            and not getattr(ctx.bundle.model.config, "is_encoder_decoder", False)
        ):
            out["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
        times = input_ids.shape[0]
        out.update(
            {
                key: (v.repeat(times, *([1] * (v.dim() - 1))) if isinstance(v, torch.Tensor) and v.dim() > 0 else v)
                for key, v in others.items()
            }
        )
        return out

    model = ctx.bundle.model
    with torch.inference_mode():
        batch_kw = kwargs(torch.stack([row, padded]), batch_mask)
        together, _, ms = _timed(lambda: ctx.call(model, batch_kw), ctx.dev, ctx.compiles)
        full = ctx.call(model, kwargs(row[None], torch.ones(1, n, dtype=torch.long, device=row.device)))
        alone_kw = kwargs(short[None], torch.ones(1, n - cut, dtype=torch.long, device=row.device))
        alone_short = ctx.call(model, alone_kw)
    first = compare(full[0], together[0], atol, rtol)
    batched_short = together[1]
    if batched_short.shape != alone_short[0].shape:
        if batched_short.dim() >= 1 and batched_short.shape[0] == n and alone_short.shape[1] == n - cut:
            batched_short = batched_short[cut:] if side == "left" else batched_short[: n - cut]
        else:
            raise NotApplicable(f"the output {list(together.shape)} does not follow the tokens")
    second = compare(alone_short[0], batched_short, atol, rtol)
    worst = second if second["verdict"] != "works" else first
    out = dict(worst)
    for key in ("max_abs_diff", "max_rel_diff", "non_finite"):
        values = [r[key] for r in (first, second) if r.get(key) is not None]
        if values:
            out[key] = max(values)
    return {**out, "padding_side": side, "padded_tokens": cut, **_speed(ctx, ms)}


# -- static cache: greedy generation with a static KV cache against a dynamic one --------------
def cache_used(output: Any) -> str:
    """The cache a generate() call with return_dict_in_generate used, read back from its output:
    its class name, an encoder-decoder's self-attention cache's, with its layers' classes when
    they differ from it ("none" when the output holds no cache)."""
    cache = getattr(output, "past_key_values", None)
    inner = getattr(cache, "self_attention_cache", None)
    cache = inner if inner is not None else cache
    if cache is None:
        return "none"
    layers = sorted({type(layer).__name__ for layer in getattr(cache, "layers", None) or []})
    return type(cache).__name__ + (f" ({', '.join(layers)})" if layers else "")


def _is_static(used: str) -> bool:
    return used.startswith("Static") or (used.endswith(")") and "Static" in used and "Dynamic" not in used)


def _static_cache(ctx: Context) -> dict[str, Any]:
    model = ctx.bundle.model
    kw = ctx.check.generate_kwargs(ctx.bundle, _cast(ctx.inputs, ctx.dtype))
    assert kw is not None  # _applicable() said the model generates
    kw = {**kw, "return_dict_in_generate": True}  # the cache generation used comes back with it
    with torch.inference_mode():
        dynamic, _, dyn_ms = _timed(lambda: model.generate(**kw), ctx.dev, ctx.compiles)
        static, _, ms = _timed(lambda: model.generate(**kw, cache_implementation="static"), ctx.dev, ctx.compiles)
    used = cache_used(static)
    if not _is_static(used):  # the model keeps its own state (RWKV, XLNet): nothing static ran
        raise NotApplicable(f"asked cache_implementation static, generation used {used}")
    dynamic = getattr(dynamic, "sequences", dynamic)
    static = getattr(static, "sequences", static)
    speed = _speed(ctx, ms, dyn_ms)
    if dynamic.shape != static.shape:
        return {
            "verdict": "mismatch",
            "reason": f"sequences of shape {list(static.shape)}, dynamic {list(dynamic.shape)}",
            **speed,
        }
    differ = int((dynamic != static).sum())
    verdict = "works" if differ == 0 else "mismatch"
    out: dict[str, Any] = {"verdict": verdict, "tokens_differ": differ, "tokens": int(static.numel()), **speed}
    if differ:
        out["reason"] = f"{differ} of {static.numel()} greedy tokens differ from the dynamic cache's"
    return out


# -- memory -------------------------------------------------------------------------------------
def _peak_start(dev: torch.device) -> int | None:
    if dev.type != "cuda":
        return None  # the host's peak cannot be reset per variant: the job's peak RSS covers them
    torch.cuda.reset_peak_memory_stats(dev)
    return int(torch.cuda.memory_allocated(dev))


def _peak_mb(dev: torch.device, start: int | None) -> float | None:
    if start is None:
        return None
    return round(torch.cuda.max_memory_allocated(dev) / 2**20, 2)


# -- findings -----------------------------------------------------------------------------------
def findings(results: list[dict[str, Any]], claims: dict[str, bool]) -> list[dict[str, Any]]:
    """Claims broken (claimed, then an error or a mismatch), works unclaimed, and reduced
    precisions that gave NaN/Inf or broke the quality gate."""
    out: list[dict[str, Any]] = []
    for r in results:
        v = parse([r["variant"]], where="variants")[0]
        claim = v.claim
        verdict = r["verdict"]
        judged = verdict in ("works", "mismatch")
        read_back = r.get("read_back")
        if judged and (not isinstance(read_back, dict) or _ignored(read_back, v) is not None):
            claim = None  # a verdict on something the model did not run says nothing about a claim
        if claim is not None and claim in claims and verdict != "not_applicable":
            failed = verdict == "mismatch" or (verdict == "error" and r.get("kind") not in NOT_THE_MODELS)
            if claims[claim] and failed:
                out.append(
                    {
                        "finding": "claim_broken",
                        "variant": r["variant"],
                        "claim": claim,
                        "verdict": verdict,
                        "detail": _detail(r),
                    }
                )
            elif not claims[claim] and verdict == "works":
                out.append(
                    {
                        "finding": "works_unclaimed",
                        "variant": r["variant"],
                        "claim": claim,
                        "verdict": verdict,
                        "detail": _detail(r),
                    }
                )
        if v.precision != "float32":
            if r.get("non_finite"):
                out.append({"finding": "non_finite", "variant": r["variant"], "verdict": verdict, "detail": _detail(r)})
            q = r.get("quality")
            if q and q.get("passed") is False:
                detail = (
                    f"quality gate failed in {v.precision}: {q.get('metric')} {q.get('value')} (bound {q.get('bound')})"
                )
                out.append(
                    {"finding": "precision_quality", "variant": r["variant"], "verdict": verdict, "detail": detail}
                )
    return out


def _detail(r: dict[str, Any]) -> str:
    if r["verdict"] == "error":
        return f"{r.get('kind')}: {r.get('message', '')}"[:300]
    if r.get("reason"):
        return str(r["reason"])
    if r.get("max_abs_diff") is not None:
        return (
            f"max abs {r['max_abs_diff']:.3g}, max rel {r['max_rel_diff']:.3g} (atol {r['atol']:g}, rtol {r['rtol']:g})"
        )
    return r["verdict"]


__all__ = ["Snapshot", "claims_of", "compare", "findings", "run"]
